//! Counters for `/metrics` (Prometheus text format, on `admin_listen`) and the router's access
//! log. Everything here is updated with atomics on the request path; `render` reads a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// What the router saw of one app's requests.
#[derive(Default)]
struct AppRequests {
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    classes: [AtomicU64; 5],
    /// Requests at or under each bucket's bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Count and total seconds of one kind of operation, by app and outcome.
type Durations = Mutex<BTreeMap<(String, &'static str), (u64, f64)>>;

#[derive(Default)]
pub struct Metrics {
    apps: RwLock<HashMap<String, Arc<AppRequests>>>,
    active_connections: AtomicI64,
    /// Requests for hosts that route to no app.
    unrouted: AtomicU64,
    /// POSTs to an inbound webhook URL with a wrong token.
    inbound_refused: AtomicU64,
    deploys: Durations,
    builds: Durations,
}

/// Counts one client connection while it lives.
pub struct Connection<'a>(&'a Metrics);

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn connection(&self) -> Connection<'_> {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        Connection(self)
    }

    fn app(&self, app: &str) -> Arc<AppRequests> {
        if let Some(found) = self.apps.read().unwrap_or_else(|p| p.into_inner()).get(app) {
            return found.clone();
        }
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    /// An inbound webhook POST with a wrong token.
    pub fn inbound_refused(&self) {
        self.inbound_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// One request answered for `app` (None: its host routes to no app).
    pub fn request(&self, app: Option<&str>, status: u16, took: Duration) {
        let Some(app) = app else {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let counters = self.app(app);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        counters.classes[class].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            counters.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        counters
            .sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        counters.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn deploy(&self, app: &str, succeeded: bool, took: Duration) {
        record(&self.deploys, app, succeeded, took);
    }

    pub fn build(&self, app: &str, succeeded: bool, took: Duration) {
        record(&self.builds, app, succeeded, took);
    }

    /// Forgets an app (destroyed or renamed), so its series end.
    pub fn forget(&self, app: &str) {
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    /// Every series, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let apps: BTreeMap<String, Arc<AppRequests>> = self
            .apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push_str("# HELP berth_http_requests_total Requests the router answered, by app and status class.\n# TYPE berth_http_requests_total counter\n");
        for (app, counters) in &apps {
            for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let n = counters.classes[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "berth_http_requests_total{{app=\"{app}\",status=\"{class}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP berth_http_unrouted_requests_total Requests for hosts that route to no app (answered 404).\n# TYPE berth_http_unrouted_requests_total counter\n");
        let _ = writeln!(
            out,
            "berth_http_unrouted_requests_total {}",
            self.unrouted.load(Ordering::Relaxed)
        );
        out.push_str("# HELP berth_inbound_webhooks_refused_total POSTs to inbound webhook URLs with a wrong token (answered 403).\n# TYPE berth_inbound_webhooks_refused_total counter\n");
        let _ = writeln!(
            out,
            "berth_inbound_webhooks_refused_total {}",
            self.inbound_refused.load(Ordering::Relaxed)
        );
        out.push_str("# HELP berth_http_request_duration_seconds Time from a request's arrival to its response's head, by app.\n# TYPE berth_http_request_duration_seconds histogram\n");
        for (app, counters) in &apps {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += counters.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "berth_http_request_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = counters.count.load(Ordering::Relaxed);
            let sum = counters.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "berth_http_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}\nberth_http_request_duration_seconds_sum{{app=\"{app}\"}} {sum}\nberth_http_request_duration_seconds_count{{app=\"{app}\"}} {count}"
            );
        }
        out.push_str("# HELP berth_http_active_connections Client connections open to the router.\n# TYPE berth_http_active_connections gauge\n");
        let _ = writeln!(
            out,
            "berth_http_active_connections {}",
            self.active_connections.load(Ordering::Relaxed)
        );
        for (name, what, durations) in [
            (
                "deploys",
                "Deploys (pushes, config changes, rollbacks, canaries)",
                &self.deploys,
            ),
            ("builds", "Image builds", &self.builds),
        ] {
            let singular = name.trim_end_matches('s');
            let _ = writeln!(
                out,
                "# HELP berth_{name}_total {what}, by app and outcome.\n# TYPE berth_{name}_total counter"
            );
            let snapshot = durations.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for ((app, outcome), (count, _)) in &snapshot {
                let _ = writeln!(
                    out,
                    "berth_{name}_total{{app=\"{app}\",outcome=\"{outcome}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP berth_{singular}_duration_seconds_total Seconds spent in {name}, by app and outcome.\n# TYPE berth_{singular}_duration_seconds_total counter"
            );
            for ((app, outcome), (_, seconds)) in &snapshot {
                let _ = writeln!(
                    out,
                    "berth_{singular}_duration_seconds_total{{app=\"{app}\",outcome=\"{outcome}\"}} {seconds}"
                );
            }
        }
        out
    }
}

fn record(durations: &Durations, app: &str, succeeded: bool, took: Duration) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    let mut map = durations.lock().unwrap_or_else(|p| p.into_inner());
    let entry = map.entry((app.to_string(), outcome)).or_default();
    entry.0 += 1;
    entry.1 += took.as_secs_f64();
}

/// One line of the access log.
pub struct AccessEntry<'a> {
    pub remote: std::net::IpAddr,
    pub host: &'a str,
    pub app: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub version: hyper::Version,
    pub status: u16,
    pub upstream: Option<std::net::SocketAddr>,
    pub canary: bool,
    pub took: Duration,
}

/// The access log: `<data_dir>/logs/access.log`, one line per request, buffered and written
/// out every half second.
pub struct AccessLog {
    json: bool,
    buffer: Mutex<Vec<u8>>,
}

impl AccessLog {
    /// Opens the log and starts its writer; none when `format` is `off`.
    pub fn open(format: &str, dir: &std::path::Path) -> Result<Option<Arc<AccessLog>>, String> {
        if format == "off" {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("access.log");
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let log = Arc::new(AccessLog {
            json: format == "json",
            buffer: Mutex::new(Vec::with_capacity(1 << 16)),
        });
        let writer = Arc::downgrade(&log);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let Some(log) = writer.upgrade() else { return };
                let pending =
                    std::mem::take(&mut *log.buffer.lock().unwrap_or_else(|p| p.into_inner()));
                if !pending.is_empty() {
                    let _ = file.write_all(&pending);
                }
            }
        });
        Ok(Some(log))
    }

    pub fn write(&self, entry: &AccessEntry<'_>) {
        let time = rfc3339(SystemTime::now());
        let upstream = entry.upstream.map(|u| u.to_string());
        let line = if self.json {
            let mut line = serde_json::json!({
                "time": time,
                "remote": entry.remote.to_string(),
                "host": entry.host,
                "app": entry.app,
                "method": entry.method,
                "path": entry.path,
                "version": format!("{:?}", entry.version),
                "status": entry.status,
                "upstream": upstream,
                "canary": entry.canary,
                "duration_ms": (entry.took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            })
            .to_string();
            line.push('\n');
            line
        } else {
            format!(
                "{time} {} {} \"{} {} {:?}\" {} app={} upstream={}{} {:.3}ms\n",
                entry.remote,
                entry.host,
                entry.method,
                entry.path.escape_debug(),
                entry.version,
                entry.status,
                entry.app.unwrap_or("-"),
                upstream.as_deref().unwrap_or("-"),
                if entry.canary { " canary" } else { "" },
                entry.took.as_secs_f64() * 1000.0,
            )
        };
        self.buffer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(line.as_bytes());
    }
}

/// `2026-12-02T03:04:05.678Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_180_645_678);
        assert_eq!(rfc3339(t), "2026-12-02T03:04:05.678Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn requests_are_counted_by_class_and_bucket() {
        let metrics = Metrics::default();
        metrics.request(Some("shop"), 200, Duration::from_millis(3));
        metrics.request(Some("shop"), 503, Duration::from_millis(300));
        metrics.request(None, 404, Duration::from_millis(1));
        metrics.deploy("shop", true, Duration::from_secs(2));
        let text = metrics.render();
        assert!(text.contains("berth_http_requests_total{app=\"shop\",status=\"2xx\"} 1\n"));
        assert!(text.contains("berth_http_requests_total{app=\"shop\",status=\"5xx\"} 1\n"));
        assert!(
            text.contains(
                "berth_http_request_duration_seconds_bucket{app=\"shop\",le=\"0.005\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "berth_http_request_duration_seconds_bucket{app=\"shop\",le=\"0.5\"} 2\n"
            )
        );
        assert!(text.contains("berth_http_request_duration_seconds_count{app=\"shop\"} 2\n"));
        assert!(text.contains("berth_http_unrouted_requests_total 1\n"));
        assert!(text.contains("berth_deploys_total{app=\"shop\",outcome=\"succeeded\"} 1\n"));
    }
}
