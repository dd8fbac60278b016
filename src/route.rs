//! The app proxy: each app has one stable port on `publish_address`, and berth forwards every
//! connection to one of the app's serving containers. Deploys, scaling and restarts change the
//! set of containers behind the port atomically, so the app's address never changes and a
//! switch drops no connection. This is plain TCP; the HTTP router (`router.rs`) picks from the
//! same serving sets, request by request.
//!
//! An instance is a socket address (host and port), not a local port: the deploy targets say
//! where each instance answers, which may be another machine (a swarm node).
//!
//! Each app's set is the current release's web instances plus, during a canary, the canary
//! release's, which get `weight` % of the picks (exactly that share over every 100). Within a
//! release, picks go round robin or to the instance with the fewest requests in flight
//! (`balance`). An instance that refuses connections is taken out of the picks until a health
//! check connects to it again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};

use crate::manifest::Healthcheck;

/// How often every serving instance is checked (a TCP connect).
const HEALTH_INTERVAL: Duration = Duration::from_millis(1000);
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

/// The address to reach something published on `address` from this host: loopback for
/// "every interface".
pub fn reachable(address: IpAddr) -> IpAddr {
    if address.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        address
    }
}

/// A port free on `address` right now, for something berth binds later (an app's port, a
/// container's host port). Taken below the kernel's ephemeral range, so the local ends of
/// outgoing connections (which come from that range) cannot take it in between.
pub fn free_port(address: IpAddr) -> Result<u16, String> {
    bind_free(address).map(|(port, _)| port)
}

/// `free_port`, still bound: the caller holds the port until it uses the listener.
fn bind_free(address: IpAddr) -> Result<(u16, std::net::TcpListener), String> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_100));
    for _ in 0..200 {
        let port = rand::Rng::gen_range(&mut rand::thread_rng(), low..high);
        if let Ok(listener) = std::net::TcpListener::bind(SocketAddr::new(address, port)) {
            return Ok((port, listener));
        }
    }
    std::net::TcpListener::bind(SocketAddr::new(address, 0))
        .and_then(|l| Ok((l.local_addr()?.port(), l)))
        .map_err(|e| format!("cannot find a free port on {address}: {e}"))
}

/// How picks spread over the instances of one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastConnections,
}

/// Where one request of an app goes.
pub enum Pick {
    /// No such app, or it is not deployed or stopped.
    NotServed,
    /// The app is served but has no running web instance right now.
    NoInstance,
    Upstream(Lease),
}

/// One serving instance.
pub struct Upstream {
    pub address: SocketAddr,
    healthy: AtomicBool,
    in_flight: AtomicUsize,
}

impl Upstream {
    fn new(address: SocketAddr) -> Arc<Upstream> {
        Arc::new(Upstream {
            address,
            healthy: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Takes the instance out of the picks (it refused a connection, or closed one without
    /// answering); the health check puts it back once it answers again.
    pub fn eject(&self) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::info!(upstream = %self.address, "instance taken out: it failed a request");
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Puts the instance back in the picks (it just answered a request).
    pub fn answered(&self) {
        if !self.is_healthy() {
            self.healthy.store(true, Ordering::Relaxed);
        }
    }
}

/// A picked instance; counts as one request in flight on it until dropped.
pub struct Lease {
    pub upstream: Arc<Upstream>,
    /// Whether it belongs to the canary release.
    pub canary: bool,
}

impl Lease {
    pub fn address(&self) -> SocketAddr {
        self.upstream.address
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The instances of one release, picked in turn.
#[derive(Default)]
struct Pool {
    upstreams: Vec<Arc<Upstream>>,
    next: AtomicUsize,
}

impl Pool {
    fn pick(&self, balance: Balance) -> Option<Arc<Upstream>> {
        let healthy = || self.upstreams.iter().filter(|u| u.is_healthy());
        let chosen = match balance {
            Balance::LeastConnections => {
                healthy().min_by_key(|u| u.in_flight.load(Ordering::Relaxed))
            }
            Balance::RoundRobin => {
                let count = healthy().count();
                if count == 0 {
                    None
                } else {
                    let next = self.next.fetch_add(1, Ordering::Relaxed);
                    healthy().nth(next % count)
                }
            }
        };
        // With every instance out, try them anyway: a refusal costs less than a certain 503.
        chosen
            .or_else(|| {
                let next = self.next.fetch_add(1, Ordering::Relaxed);
                self.upstreams.get(next % self.upstreams.len().max(1))
            })
            .cloned()
    }
}

struct Canary {
    pool: Pool,
    weight: u8,
}

/// What an app's port and host serve right now; replaced whole on every change.
#[derive(Default)]
struct Set {
    stable: Pool,
    canary: Option<Canary>,
}

impl Set {
    fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.stable
            .upstreams
            .iter()
            .chain(self.canary.iter().flat_map(|c| c.pool.upstreams.iter()))
    }
}

/// What one app's port and host serve, as the data plane keeps it across its restarts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Served {
    pub port: u16,
    pub stable: Vec<SocketAddr>,
    pub canary: Option<(Vec<SocketAddr>, u8)>,
    pub health: Option<Healthcheck>,
}

pub struct Routes {
    publish_address: IpAddr,
    /// Client connections the app ports are forwarding right now (all apps).
    active: Arc<AtomicUsize>,
    balance: Balance,
    /// Bounds on each app port's clients: idle time, connections per client address.
    tcp_idle: Duration,
    per_address: usize,
    apps: RwLock<HashMap<String, Arc<Route>>>,
    /// Ports given to new apps, held bound until their first deploy serves on them (else
    /// another process, e.g. the engine publishing a container, could take one in between).
    reserved: Mutex<HashMap<u16, std::net::TcpListener>>,
}

struct Route {
    port: u16,
    /// The listening socket (a copy of the accept task's), handed to a newer data plane.
    listener: std::net::TcpListener,
    set: RwLock<Arc<Set>>,
    /// Counts picks, for the canary's share.
    picks: AtomicUsize,
    /// Instances that left the set with requests possibly still in flight.
    retired: Mutex<Vec<Arc<Upstream>>>,
    /// app.json's web health check, run against every instance by the health task.
    health: RwLock<Option<Healthcheck>>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Route {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Route {
    fn set(&self) -> Arc<Set> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pick(&self, balance: Balance) -> Option<Lease> {
        let set = self.set();
        let n = self.picks.fetch_add(1, Ordering::Relaxed);
        let canary = set.canary.as_ref().filter(|c| {
            !c.pool.upstreams.is_empty()
                && (n.wrapping_mul(c.weight as usize)) % 100 < c.weight as usize
        });
        let (upstream, canary) = match canary {
            Some(canary) => (canary.pool.pick(balance), true),
            None => (set.stable.pick(balance), false),
        };
        let upstream = upstream?;
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease { upstream, canary })
    }

    /// Replaces one part of the set, keeping the health of instances that stay.
    fn replace(&self, change: impl FnOnce(&Set, &dyn Fn(&[SocketAddr]) -> Pool) -> Set) {
        let mut slot = self.set.write().unwrap_or_else(|p| p.into_inner());
        let old = slot.clone();
        let pool = |addresses: &[SocketAddr]| Pool {
            upstreams: addresses
                .iter()
                .map(|a| {
                    old.all()
                        .find(|u| u.address == *a)
                        .cloned()
                        .unwrap_or_else(|| Upstream::new(*a))
                })
                .collect(),
            next: AtomicUsize::new(0),
        };
        let new = change(&old, &pool);
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|u| u.in_flight.load(Ordering::Relaxed) > 0);
        retired.extend(
            old.all()
                .filter(|u| !new.all().any(|n| Arc::ptr_eq(n, u)))
                .cloned(),
        );
        *slot = Arc::new(new);
    }

    /// Requests in flight on these instances (in the set or retired).
    fn in_flight(&self, addresses: &[SocketAddr]) -> usize {
        let set = self.set();
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        set.all()
            .chain(retired.iter())
            .filter(|u| addresses.contains(&u.address))
            .map(|u| u.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

fn same_pool(pool: &Pool, make: &dyn Fn(&[SocketAddr]) -> Pool) -> Pool {
    make(&pool.upstreams.iter().map(|u| u.address).collect::<Vec<_>>())
}

impl Routes {
    pub fn new(publish_address: IpAddr, balance: Balance) -> Routes {
        Routes::bounded(publish_address, balance, Duration::from_secs(3600), 1024)
    }

    /// Routes whose app ports close connections idle for `tcp_idle` and take at most
    /// `per_address` connections from one client address (4096 in all per app).
    pub fn bounded(
        publish_address: IpAddr,
        balance: Balance,
        tcp_idle: Duration,
        per_address: usize,
    ) -> Routes {
        Routes {
            tcp_idle,
            per_address,
            publish_address,
            balance,
            active: Arc::default(),
            apps: RwLock::new(HashMap::new()),
            reserved: Mutex::default(),
        }
    }

    /// A port for a new app, kept bound by berth until the app's first deploy serves on it.
    pub fn free_port(&self) -> Result<u16, String> {
        let (port, listener) = bind_free(self.publish_address)?;
        self.reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, listener);
        Ok(port)
    }

    fn route(&self, app: &str) -> Option<Arc<Route>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
    }

    /// Serves `app` on `port`, forwarding to the current release's instances at `addresses`
    /// (replacing the previous set at once; a canary stays). Binds the port the first time.
    pub fn point(&self, app: &str, port: u16, addresses: &[SocketAddr]) -> Result<(), String> {
        let route = self.bind(app, port)?;
        route.replace(|old, pool| Set {
            stable: pool(addresses),
            canary: old.canary.as_ref().map(|c| Canary {
                pool: same_pool(&c.pool, pool),
                weight: c.weight,
            }),
        });
        Ok(())
    }

    /// Sends `weight` % of the app's picks to the canary release's instances at these
    /// addresses; `None` ends the canary (every pick goes to the current release again).
    pub fn point_canary(&self, app: &str, canary: Option<(&[SocketAddr], u8)>) {
        let Some(route) = self.route(app) else { return };
        let canary = canary.map(|(addresses, weight)| (addresses, weight.min(100)));
        route.replace(|old, pool| Set {
            stable: same_pool(&old.stable, pool),
            canary: canary.map(|(addresses, weight)| Canary {
                pool: pool(addresses),
                weight,
            }),
        });
    }

    /// Changes the canary's share, keeping its instances; false when it has none serving.
    pub fn set_canary_weight(&self, app: &str, weight: u8) -> bool {
        let Some(route) = self.route(app) else {
            return false;
        };
        let mut changed = false;
        route.replace(|old, pool| Set {
            stable: same_pool(&old.stable, pool),
            canary: old.canary.as_ref().map(|c| {
                changed = true;
                Canary {
                    pool: same_pool(&c.pool, pool),
                    weight: weight.min(100),
                }
            }),
        });
        changed
    }

    /// Makes the canary's instances the app's current ones and ends the canary, in one switch;
    /// gives their addresses (none when the app has no canary serving).
    pub fn promote_canary(&self, app: &str) -> Option<Vec<SocketAddr>> {
        let route = self.route(app)?;
        let mut addresses = None;
        route.replace(|old, pool| match &old.canary {
            Some(canary) if !canary.pool.upstreams.is_empty() => {
                addresses = Some(canary.pool.upstreams.iter().map(|u| u.address).collect());
                Set {
                    stable: same_pool(&canary.pool, pool),
                    canary: None,
                }
            }
            _ => Set {
                stable: same_pool(&old.stable, pool),
                canary: old.canary.as_ref().map(|c| Canary {
                    pool: same_pool(&c.pool, pool),
                    weight: c.weight,
                }),
            },
        });
        addresses
    }

    /// The app's route on `port`, made (and the port bound) when it has none there yet.
    fn bind(&self, app: &str, port: u16) -> Result<Arc<Route>, String> {
        let mut apps = self.apps.write().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = apps.get(app).filter(|r| r.port == port) {
            return Ok(route.clone());
        }
        apps.remove(app);
        let reserved = self
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
        let std_listener = match reserved {
            Some(listener) => listener,
            None => std::net::TcpListener::bind(SocketAddr::new(self.publish_address, port))
                .map_err(|e| {
                    format!(
                        "cannot listen on {}:{port} for {app}: {e}",
                        self.publish_address
                    )
                })?,
        };
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let kept = std_listener.try_clone().map_err(|e| e.to_string())?;
        let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let balance = self.balance;
        let active = self.active.clone();
        let route = Arc::new_cyclic(|weak: &std::sync::Weak<Route>| {
            let limits = crate::limits::ConnectionLimits::new(PORT_CONNECTIONS, self.per_address);
            let accept = tokio::spawn(accept_loop(
                listener,
                weak.clone(),
                balance,
                limits,
                self.tcp_idle,
                active,
            ));
            let health = tokio::spawn(health_loop(weak.clone()));
            Route {
                port,
                listener: kept,
                set: RwLock::default(),
                picks: AtomicUsize::new(0),
                retired: Mutex::default(),
                health: RwLock::default(),
                tasks: vec![accept.abort_handle(), health.abort_handle()],
            }
        });
        apps.insert(app.to_string(), route.clone());
        Ok(route)
    }

    /// Takes listening sockets a previous data plane handed over, by port: an app's port is
    /// served from them instead of being bound anew.
    pub fn adopt_listeners(&self, listeners: Vec<std::net::TcpListener>) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        for listener in listeners {
            if let Ok(address) = listener.local_addr() {
                reserved.insert(address.port(), listener);
            }
        }
    }

    /// Every app's serving set, port and health check, to keep across restarts.
    pub fn snapshot(&self) -> HashMap<String, Served> {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        apps.iter()
            .map(|(app, route)| {
                let set = route.set();
                let addresses = |pool: &Pool| pool.upstreams.iter().map(|u| u.address).collect();
                let served = Served {
                    port: route.port,
                    stable: addresses(&set.stable),
                    canary: set.canary.as_ref().map(|c| (addresses(&c.pool), c.weight)),
                    health: route
                        .health
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone(),
                };
                (app.clone(), served)
            })
            .collect()
    }

    /// Serves the app as `served` says (a data plane starting from its saved table).
    pub fn restore(&self, app: &str, served: &Served) -> Result<(), String> {
        self.point(app, served.port, &served.stable)?;
        if let Some((addresses, weight)) = &served.canary {
            self.point_canary(app, Some((addresses, *weight)));
        }
        self.set_health(app, served.health.clone());
        Ok(())
    }

    /// The listening sockets of every app port (for a newer data plane to inherit).
    pub fn listener_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        apps.values().map(|r| r.listener.as_raw_fd()).collect()
    }

    /// Stops accepting on every app port (a newer data plane accepts on the same sockets);
    /// connections already forwarded go on.
    pub fn stop_accepting(&self) {
        let apps = self.apps.read().unwrap_or_else(|p| p.into_inner());
        for route in apps.values() {
            if let Some(accept) = route.tasks.first() {
                accept.abort();
            }
        }
    }

    /// Client connections the app ports are forwarding right now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops serving the app's port (stopped or destroyed apps).
    pub fn remove(&self, app: &str) {
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    /// The container to send one of the app's requests to, for the HTTP router.
    pub fn pick(&self, app: &str) -> Pick {
        let Some(route) = self.route(app) else {
            return Pick::NotServed;
        };
        match route.pick(self.balance) {
            Some(lease) => Pick::Upstream(lease),
            None => Pick::NoInstance,
        }
    }

    /// The canary's containers and weight, when the app has a canary.
    pub fn canary(&self, app: &str) -> Option<(Vec<SocketAddr>, u8)> {
        let set = self.route(app)?.set();
        let canary = set.canary.as_ref()?;
        Some((
            canary.pool.upstreams.iter().map(|u| u.address).collect(),
            canary.weight,
        ))
    }

    /// The check every instance of the app must keep passing (app.json's web health check);
    /// none: it must accept connections.
    pub fn set_health(&self, app: &str, check: Option<Healthcheck>) {
        if let Some(route) = self.route(app) {
            *route.health.write().unwrap_or_else(|p| p.into_inner()) = check;
        }
    }

    /// Resolves once none of the app's instances at `addresses` has a request in flight, or
    /// after `max`.
    pub fn drained(
        &self,
        app: &str,
        addresses: &[SocketAddr],
        max: Duration,
    ) -> BoxFuture<'static, ()> {
        let route = self.route(app);
        let addresses = addresses.to_vec();
        async move {
            let (Some(route), false) = (route, addresses.is_empty()) else {
                return;
            };
            let deadline = Instant::now() + max;
            // Requests picked just before the switch may still be connecting.
            tokio::time::sleep(Duration::from_millis(100).min(max)).await;
            while Instant::now() < deadline && route.in_flight(&addresses) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        .boxed()
    }

    /// What traffic each of the app's instances gets right now, by address: `serving` (the
    /// current release), `canary`, or `out` (taken out by the health check). Addresses not
    /// listed get none.
    pub fn traffic(&self, app: &str) -> HashMap<SocketAddr, &'static str> {
        let Some(route) = self.route(app) else {
            return HashMap::new();
        };
        let set = route.set();
        let label = |upstream: &Upstream, what| {
            let what = if upstream.is_healthy() { what } else { "out" };
            (upstream.address, what)
        };
        set.stable
            .upstreams
            .iter()
            .map(|u| label(u, "serving"))
            .chain(
                set.canary
                    .iter()
                    .flat_map(|c| c.pool.upstreams.iter().map(|u| label(u, "canary"))),
            )
            .collect()
    }
}

/// Connections one app's port takes at once.
const PORT_CONNECTIONS: usize = 4096;

async fn accept_loop(
    listener: TcpListener,
    route: std::sync::Weak<Route>,
    balance: Balance,
    limits: Arc<crate::limits::ConnectionLimits>,
    idle: Duration,
    active: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(route) = route.upgrade() else { return };
        // One client cannot hold every descriptor: a refused socket is closed at once.
        let Some(slot) = limits.enter(peer.ip()) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let client = crate::limits::IdleIo::new(client, idle);
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        tokio::spawn(async move {
            forward(client, route, balance).await;
            drop(slot);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Connects the client to a picked instance; one that refuses is taken out and the next tried.
async fn forward(mut client: crate::limits::IdleIo, route: Arc<Route>, balance: Balance) {
    let tries = route.set().all().count();
    for _ in 0..tries.max(1) {
        let Some(lease) = route.pick(balance) else {
            return;
        };
        let connect = TcpStream::connect(lease.address());
        let Ok(Ok(mut upstream)) = tokio::time::timeout(Duration::from_secs(2), connect).await
        else {
            lease.upstream.eject();
            continue;
        };
        drop(route);
        let _ = upstream.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
}

/// Checks every instance of the app each second: with app.json's web health check, each must
/// pass it; without, each must accept connections. One that fails is taken out of the picks,
/// one that passes (answers) again is put back.
async fn health_loop(route: std::sync::Weak<Route>) {
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        let Some((set, check)) = route.upgrade().map(|r| {
            let check = r.health.read().unwrap_or_else(|p| p.into_inner()).clone();
            (r.set(), check)
        }) else {
            return;
        };
        let check = check.as_ref();
        let checks = set.all().map(|upstream| async move {
            let was = upstream.is_healthy();
            // In the picks: it must accept connections. Out: it must answer, since the
            // engine's port proxy accepts for a container that is gone.
            let up = if let Some(check) = check {
                let timeout = Duration::from_secs(check.timeout).min(HEALTH_TIMEOUT * 2);
                let probe = crate::deploy::probe::probe(upstream.address, Some(check));
                matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(())))
            } else if was {
                let connect = TcpStream::connect(upstream.address);
                matches!(
                    tokio::time::timeout(HEALTH_TIMEOUT, connect).await,
                    Ok(Ok(_))
                )
            } else {
                // Bytes back: silence is the engine's port proxy waiting on a container
                // being torn down.
                let reply = crate::deploy::probe::reply_to_get(upstream.address, HEALTH_TIMEOUT);
                reply.await == crate::deploy::probe::Reply::Bytes
            };
            upstream.healthy.store(up, Ordering::Relaxed);
            if was != up {
                let address = upstream.address;
                if up {
                    tracing::info!(%address, "instance back in the picks: it accepts again");
                } else {
                    tracing::info!(%address, "instance taken out: health check failed");
                }
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(ports: &[u16]) -> Vec<SocketAddr> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        ports.iter().map(|p| SocketAddr::new(ip, *p)).collect()
    }

    fn route(stable: &[u16], canary: Option<(&[u16], u8)>) -> (Routes, Arc<Route>) {
        let routes = Routes::new(IpAddr::V4(Ipv4Addr::LOCALHOST), Balance::RoundRobin);
        let route = Arc::new(Route {
            port: 0,
            listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            set: RwLock::default(),
            picks: AtomicUsize::new(0),
            retired: Mutex::default(),
            health: RwLock::default(),
            tasks: Vec::new(),
        });
        let (stable, canary) = (local(stable), canary.map(|(p, w)| (local(p), w)));
        route.replace(|_, pool| Set {
            stable: pool(&stable),
            canary: canary.map(|(a, weight)| Canary {
                pool: pool(&a),
                weight,
            }),
        });
        (routes, route)
    }

    #[tokio::test]
    async fn a_new_apps_port_stays_taken_until_it_serves_there() {
        let routes = Routes::new(IpAddr::V4(Ipv4Addr::LOCALHOST), Balance::RoundRobin);
        let port = routes.free_port().unwrap();
        let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        assert!(
            std::net::TcpListener::bind(address).is_err(),
            "nobody else may take {port} before the first deploy"
        );
        routes.point("shop", port, &[]).unwrap();
        assert!(std::net::TcpStream::connect(address).is_ok());
        routes.remove("shop");
    }

    #[tokio::test]
    async fn an_instance_is_an_address_on_any_host() {
        // Issue 14: a serving set holds socket addresses, so an instance may live elsewhere
        // (here 127.0.0.2, another address than the app port's); the app port reaches it.
        let upstream = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let at = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = upstream.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut socket, b"from elsewhere")
                .await
                .unwrap();
        });
        let routes = Routes::new(IpAddr::V4(Ipv4Addr::LOCALHOST), Balance::RoundRobin);
        let port = routes.free_port().unwrap();
        routes.point("far", port, &[at]).unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut client, &mut answer)
            .await
            .unwrap();
        assert_eq!(answer, "from elsewhere");
        assert_eq!(routes.traffic("far"), HashMap::from([(at, "serving")]));
        routes.remove("far");
    }

    #[test]
    fn a_canary_gets_exactly_its_weight_of_every_hundred_picks() {
        for weight in [0u8, 1, 10, 20, 33, 50, 99, 100] {
            let (_, route) = route(&[1, 2], Some((&[3], weight)));
            let canary = (0..1000)
                .filter(|_| route.pick(Balance::RoundRobin).unwrap().canary)
                .count();
            assert_eq!(canary, weight as usize * 10, "weight {weight}");
        }
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_ejected_instances() {
        let (_, route) = route(&[1, 2, 3], None);
        let mut seen = HashMap::new();
        for _ in 0..300 {
            *seen
                .entry(route.pick(Balance::RoundRobin).unwrap().address().port())
                .or_insert(0) += 1;
        }
        assert_eq!(seen, HashMap::from([(1, 100), (2, 100), (3, 100)]));
        route.set().stable.upstreams[1].eject();
        for _ in 0..30 {
            assert_ne!(route.pick(Balance::RoundRobin).unwrap().address().port(), 2);
        }
    }

    #[test]
    fn least_connections_prefers_the_idle_instance() {
        let (_, route) = route(&[1, 2], None);
        let busy = route.pick(Balance::LeastConnections).unwrap();
        for _ in 0..5 {
            let lease = route.pick(Balance::LeastConnections).unwrap();
            assert_ne!(lease.address(), busy.address());
        }
    }

    #[test]
    fn repointing_keeps_health_of_instances_that_stay() {
        let (_, route) = route(&[1, 2], None);
        route.set().stable.upstreams[0].eject();
        let addresses = local(&[1, 3]);
        route.replace(|_, pool| Set {
            stable: pool(&addresses),
            canary: None,
        });
        let set = route.set();
        assert!(!set.stable.upstreams[0].is_healthy());
        assert!(set.stable.upstreams[1].is_healthy());
    }
}
