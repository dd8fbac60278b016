//! Webhooks. Out: the events berth records (the `events` table) become signed JSON POSTs to the
//! URLs of `webhooks:add`: a dispatcher reads new events, writes one `deliveries` row per
//! matching webhook, and sends each with retries and backoff (`webhooks:deliveries` shows how
//! it went). In: `webhooks:inbound APP` gives a URL with a secret token; a POST to it (from the
//! router) runs the app's `git:sync`.
//!
//! **Architecture Invariant:** payloads carry event names, app names, actors and the event's
//! detail line, which never holds config values; secrets never leave the DB except as the
//! signature.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use crate::names::AppName;
use crate::output::Output;
use crate::server::Berth;

pub mod inbound;
use crate::store::AppEvent;
use crate::store::LogFailure;
pub use inbound::{INBOUND_PREFIX, INBOUND_QUEUE, Inbound, Trigger, token_hash};

/// The events a webhook can ask for (`--events`), besides `*` (all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    DeploySucceeded,
    DeployFailed,
    AppLost,
    AppCrashed,
    AppDestroyed,
    CanaryStarted,
    CanaryPromoted,
    CanaryAborted,
    SyncRefused,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 9] = [
        WebhookEvent::DeploySucceeded,
        WebhookEvent::DeployFailed,
        WebhookEvent::AppLost,
        WebhookEvent::AppCrashed,
        WebhookEvent::AppDestroyed,
        WebhookEvent::CanaryStarted,
        WebhookEvent::CanaryPromoted,
        WebhookEvent::CanaryAborted,
        WebhookEvent::SyncRefused,
    ];

    /// Its name, as webhooks ask for it and receivers see it (`X-Berth-Event`, `event`).
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::DeploySucceeded => "deploy.succeeded",
            WebhookEvent::DeployFailed => "deploy.failed",
            WebhookEvent::AppLost => "app.lost",
            WebhookEvent::AppCrashed => "app.crashed",
            WebhookEvent::AppDestroyed => "app.destroyed",
            WebhookEvent::CanaryStarted => "canary.started",
            WebhookEvent::CanaryPromoted => "canary.promoted",
            WebhookEvent::CanaryAborted => "canary.aborted",
            WebhookEvent::SyncRefused => "sync.refused",
        }
    }

    pub fn parse(name: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Attempts per delivery; the waits between them double from one second (1, 2, 4, 8, 16 s).
pub const ATTEMPTS: i64 = 6;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const CURSOR: &str = "webhooks.last_event";

/// The webhook event an event of the `events` table is, if any.
pub fn event_of(kind: &str, outcome: &str) -> Option<WebhookEvent> {
    use WebhookEvent::*;
    Some(match (kind, outcome) {
        ("deploy", "succeeded") => DeploySucceeded,
        ("deploy" | "config", "failed") => DeployFailed,
        ("reconcile", "lost") => AppLost,
        ("reconcile", "failed") => AppCrashed,
        ("app.destroyed", _) => AppDestroyed,
        ("canary", "started") => CanaryStarted,
        ("canary", "promoted") => CanaryPromoted,
        ("canary", "aborted") => CanaryAborted,
        ("sync", "refused") => SyncRefused,
        _ => return None,
    })
}

/// The webhook event name of an event of the `events` table, if it is one.
pub fn event_name(kind: &str, outcome: &str) -> Option<&'static str> {
    event_of(kind, outcome).map(WebhookEvent::name)
}

/// Whether a webhook's `events` (comma-separated, or `*`) include `event`.
pub fn wants(events: &str, event: &str) -> bool {
    events.split(',').any(|e| e == "*" || e == event)
}

/// `sha256=<hex>`: HMAC-SHA256 of the body with the webhook's secret (the `X-Berth-Signature`
/// header; receivers compute the same and compare).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A random secret (hex of 32 bytes): webhook secrets and inbound tokens.
pub fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The JSON an event is sent as.
pub fn payload(event: &str, app: Option<&str>, actor: &str, detail: &str, at: &str) -> String {
    serde_json::json!({
        "event": event,
        "app": app,
        "actor": actor,
        "detail": detail,
        "created_at": at,
    })
    .to_string()
}

/// Checks a webhook URL: http or https, a host, no spaces; at most 2000 bytes.
pub fn check_url(url: &str) -> Result<hyper::Uri, String> {
    let bad = || format!("{url:?} is not an http:// or https:// URL with a host");
    if url.len() > 2000 || url.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "{url:?} has credentials in it: they would be listed and sent as the Host; each POST is signed instead (X-Berth-Signature)"
        ));
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(bad()),
    }
}

/// POSTs `body` to `url` with berth's headers; gives the HTTP status, or why nothing answered.
/// Unless `allow_internal`, a URL whose host resolves to a loopback, link-local or private
/// address is refused before anything connects, and the connection goes to the address that
/// was checked (`netguard`).
pub async fn post(
    url: &str,
    event: &str,
    delivery: i64,
    secret: &str,
    body: &str,
    allow_internal: bool,
) -> Result<u16, String> {
    let uri = check_url(url)?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let addresses = crate::netguard::resolve(&host, port, allow_internal).await?;
    let request = hyper::Request::post(path)
        .header(
            hyper::header::HOST,
            match uri.port_u16() {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            },
        )
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "berth-webhook")
        .header("X-Berth-Event", event)
        .header("X-Berth-Delivery", delivery.to_string())
        .header("X-Berth-Signature", signature(secret, body.as_bytes()))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad request: {e}"))?;
    let send = async {
        let tcp = tokio::net::TcpStream::connect(&addresses[..])
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        if https {
            let roots = native_roots();
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .map_err(|e| format!("bad host name {host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
            exchange(TokioIo::new(tls), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    };
    tokio::time::timeout(SEND_TIMEOUT, send)
        .await
        .map_err(|_| format!("no answer within {}s", SEND_TIMEOUT.as_secs()))?
}

async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status().as_u16();
    // Read (and drop) up to 64 KiB of the body so the receiver sees a complete exchange; a
    // receiver that streams more is cut off (its status counts).
    let _ = http_body_util::Limited::new(response.into_body(), RESPONSE_LIMIT)
        .collect()
        .await;
    Ok(status)
}

fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// Reads new events into deliveries and sends what is due, every half second.
pub async fn dispatch_loop(berth: Arc<Berth>) {
    let store = &berth.store;
    // A new server (or one that never had webhooks) starts at the newest event: history is
    // not replayed.
    let mut cursor = match store.setting(CURSOR).await {
        Ok(Some(value)) => value.parse().unwrap_or(0),
        _ => {
            let last = store.last_event_id().await.unwrap_or(0);
            store
                .set_setting(CURSOR, &last.to_string())
                .await
                .or_log("the webhook cursor");
            last
        }
    };
    let busy = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        match store.events_after(cursor, 200).await {
            Ok(events) if !events.is_empty() => {
                if let Err(error) = enqueue(&berth, &events).await {
                    tracing::warn!(%error, "webhook events not queued; retrying");
                    continue;
                }
                cursor = events.last().map_or(cursor, |e| e.id);
                store
                    .set_setting(CURSOR, &cursor.to_string())
                    .await
                    .or_log("the webhook cursor");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read events for webhooks"),
        }
        send_due(&berth, &busy).await;
    }
}

async fn enqueue(berth: &Berth, events: &[AppEvent]) -> Result<(), sqlx::Error> {
    let hooks = berth.store.webhooks().await?;
    if hooks.is_empty() {
        return Ok(());
    }
    // A webhook sends only while the key that added it may still see what it reports
    // (finding 9): an ex-grantee's or a removed key's hooks go quiet, `apps:info` says so.
    let mut checked = Vec::with_capacity(hooks.len());
    for hook in hooks {
        let active = webhook_active(berth, &hook).await;
        checked.push((hook, active));
    }
    let hooks = checked;
    for event in events {
        let Some(name) = event_name(&event.kind, &event.outcome) else {
            continue;
        };
        // A destroyed app's events keep the name it had (`events.app_name`).
        let app = event.app.clone();
        for (hook, active) in &hooks {
            let for_app = hook.app.is_none() || hook.app == app;
            if !active {
                continue;
            }
            if for_app && wants(&hook.events, name) {
                let body = payload(
                    name,
                    app.as_deref(),
                    &event.actor,
                    &event.detail,
                    &event.created_at,
                );
                berth
                    .store
                    .add_delivery(hook.id, name, app.as_deref(), &body)
                    .await?;
            }
        }
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Sends the due deliveries: each webhook's in order, by a task of its own, so one slow or dead
/// receiver never holds up the others' (a webhook whose task is still busy waits its turn).
async fn send_due(berth: &Arc<Berth>, busy: &Arc<std::sync::Mutex<HashSet<i64>>>) {
    let Ok(due) = berth.store.due_deliveries(now()).await else {
        return;
    };
    let mut by_hook: BTreeMap<i64, Vec<crate::store::Delivery>> = BTreeMap::new();
    for delivery in due {
        by_hook
            .entry(delivery.webhook_id)
            .or_default()
            .push(delivery);
    }
    for (hook_id, deliveries) in by_hook {
        if !busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hook_id)
        {
            continue;
        }
        let (berth, busy) = (berth.clone(), busy.clone());
        tokio::spawn(async move {
            if let Ok(Some(hook)) = berth.store.webhook(hook_id).await {
                for delivery in deliveries {
                    attempt(&berth, &hook, &delivery).await;
                }
            }
            busy.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&hook_id);
        });
    }
}

/// The most of a receiver's answer berth reads.
const RESPONSE_LIMIT: usize = 64 << 10;

/// Whether a webhook's creator may still see its events: an app's hook needs a key that may
/// operate the app, a hook of every app an admin.
pub async fn webhook_active(berth: &Berth, hook: &crate::store::Webhook) -> bool {
    match &hook.app {
        None => crate::access::key_is_admin(berth, &hook.created_by).await,
        Some(name) => match AppName::parse(name) {
            Ok(name) => match berth.store.app(&name).await {
                Ok(Some(app)) => {
                    crate::access::key_may_operate(berth, &hook.created_by, &app).await
                }
                _ => false,
            },
            Err(_) => false,
        },
    }
}

/// Whether a webhook may reach internal addresses: its creator is (still) an admin, or the
/// server allows it for members too.
pub async fn may_reach_internal(berth: &Berth, created_by: &str) -> bool {
    berth.config.allow_private_destinations || crate::access::key_is_admin(berth, created_by).await
}

/// One attempt at one delivery, recorded: delivered on 2xx, else retried after 1, 2, 4, 8, 16 s
/// and failed after `ATTEMPTS`.
async fn attempt(berth: &Berth, hook: &crate::store::Webhook, delivery: &crate::store::Delivery) {
    let result = post(
        &hook.url,
        &delivery.event,
        delivery.id,
        &hook.secret,
        &delivery.payload,
        may_reach_internal(berth, &hook.created_by).await,
    )
    .await;
    let attempts = delivery.attempts + 1;
    let (status, response, next_at) = match result {
        Ok(code) if (200..300).contains(&code) => ("delivered", format!("HTTP {code}"), 0),
        outcome => {
            let response = match outcome {
                Ok(code) => format!("HTTP {code}"),
                Err(message) => message,
            };
            if attempts >= ATTEMPTS {
                ("failed", response, 0)
            } else {
                ("pending", response, now() + (1 << (attempts - 1)))
            }
        }
    };
    if status != "delivered" {
        tracing::warn!(webhook = hook.id, delivery = delivery.id, attempts, %response, "webhook delivery not accepted");
    }
    let _ = berth
        .store
        .delivery_attempted(delivery.id, status, &response, next_at)
        .await;
}

/// Runs the syncs inbound webhooks trigger, one at a time; records refused tokens once a
/// second per app.
pub async fn inbound_loop(berth: Arc<Berth>) {
    let Some(mut receiver) = berth.inbound.take_receiver() else {
        return;
    };
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        let trigger = tokio::select! {
            trigger = receiver.recv() => match trigger {
                Some(trigger) => trigger,
                None => return,
            },
            _ = flush.tick() => {
                for (app_id, count) in berth.inbound.take_refused() {
                    berth
                        .store
                        .count_refused_sync(app_id, count)
                        .await
                        .or_log("counting refused syncs");
                    berth
                        .store
                        .note_event(
                            Some(app_id),
                            "sync",
                            "webhook",
                            "refused",
                            &format!("{count} wrong inbound webhook token(s)"),
                        )
                        .await;
                }
                continue;
            }
        };
        // From here on a new POST queues the next sync.
        berth
            .inbound
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&trigger.app_id);
        let Ok(Some(app)) = berth.store.app_by_id(trigger.app_id).await else {
            continue;
        };
        // The sync runs with the rights of the key that set the source: gone, or no longer
        // allowed to operate the app, it does not run at all.
        let Ok(Some(source)) = berth.store.sync(app.id).await else {
            continue;
        };
        if !crate::access::key_may_operate(&berth, &source.created_by, &app).await {
            tracing::warn!(app = %app.name, key = %source.created_by, "inbound webhook refused: the key that set the sync source may no longer operate the app");
            berth
                .store
                .note_event(
                    Some(app.id),
                    "sync",
                    "webhook",
                    "refused",
                    "the key that set the sync source was removed or lost access",
                )
                .await;
            continue;
        }
        let allow_internal = may_reach_internal(&berth, &source.created_by).await;
        let out = Output::discard();
        match crate::pipeline::sync(
            &berth,
            &app,
            None,
            trigger.pushed_ref.as_deref(),
            "webhook",
            allow_internal,
            &out,
        )
        .await
        {
            Ok(outcome) => tracing::info!(app = %app.name, %outcome, "inbound webhook sync"),
            Err(message) => {
                tracing::warn!(app = %app.name, %message, "inbound webhook sync failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn signatures_match_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn events_urls_and_tokens() {
        assert_eq!(event_name("deploy", "failed"), Some("deploy.failed"));
        assert_eq!(event_name("config", "failed"), Some("deploy.failed"));
        assert_eq!(event_name("reconcile", "lost"), Some("app.lost"));
        assert_eq!(event_name("labels", "ok"), None);
        assert!(wants("*", "app.lost"));
        assert!(wants("deploy.failed,app.lost", "app.lost"));
        assert!(!wants("deploy.failed", "deploy.succeeded"));
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("https://hooks.example.com/x?y=1").is_ok());
        for bad in [
            "ftp://x/",
            "http://",
            "/local",
            "http://a b/",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let inbound = Inbound::default();
        inbound
            .tokens
            .write()
            .unwrap()
            .insert("shop".into(), (7, token_hash("secret")));
        assert_eq!(
            inbound.receive("/.berth/hooks/shop/secret", b"{}"),
            Some(202)
        );
        // Attack (finding 13): a flood of wrong tokens queues nothing and is one count.
        for _ in 0..10_000 {
            assert_eq!(inbound.receive("/.berth/hooks/shop/wrong", b""), Some(403));
        }
        assert_eq!(inbound.take_refused(), HashMap::from([(7, 10_000)]));
        // An app without a hook answers the same as a wrong token (finding 27).
        assert_eq!(
            inbound.receive("/.berth/hooks/other/secret", b""),
            Some(403)
        );
        // More POSTs for an app whose sync waits join it; the queue holds one entry.
        for _ in 0..100 {
            assert_eq!(
                inbound.receive("/.berth/hooks/shop/secret", b"{}"),
                Some(202)
            );
        }
        let mut receiver = inbound.take_receiver().unwrap();
        assert_eq!(receiver.try_recv().unwrap().app_id, 7);
        assert!(receiver.try_recv().is_err());
        assert_eq!(inbound.receive("/elsewhere", b""), None);
    }
}
