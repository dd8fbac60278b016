//! The app proxy: each app has one stable port on `publish_address`, and berth forwards every
//! connection to one of the app's serving containers (round robin). Deploys, scaling and
//! restarts change the set of containers behind the port atomically, so the app's address never
//! changes and a switch drops no connection. This is plain TCP; the HTTP router (`router.rs`)
//! picks from the same serving sets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a container that left the serving set keeps running, so requests it is still
/// answering can finish.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The address to reach something published on `address` from this host: loopback for
/// "every interface".
pub fn reachable(address: IpAddr) -> IpAddr {
    if address.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        address
    }
}

/// Where one request of an app goes.
pub enum Pick {
    /// No such app, or it is not deployed or stopped.
    NotServed,
    /// The app is served but has no running web instance right now.
    NoInstance,
    Upstream(SocketAddr),
}

pub struct Routes {
    publish_address: IpAddr,
    apps: Mutex<HashMap<String, Arc<Route>>>,
}

struct Route {
    port: u16,
    upstreams: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
    listener: tokio::task::AbortHandle,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Routes {
    pub fn new(publish_address: IpAddr) -> Routes {
        Routes {
            publish_address,
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// A port free on the publish address right now, for a new app.
    pub fn free_port(&self) -> Result<u16, String> {
        std::net::TcpListener::bind(SocketAddr::new(self.publish_address, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot find a free port on {}: {e}", self.publish_address))
    }

    /// Serves `app` on `port`, forwarding to the containers published on `host_ports`
    /// (replacing the previous set at once). Binds the port the first time.
    pub fn point(&self, app: &str, port: u16, host_ports: &[u16]) -> Result<(), String> {
        let upstream_ip = reachable(self.publish_address);
        let upstreams: Vec<SocketAddr> = host_ports
            .iter()
            .map(|p| SocketAddr::new(upstream_ip, *p))
            .collect();
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(route) = apps.get(app).filter(|r| r.port == port) {
            *route.upstreams.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(upstreams);
            return Ok(());
        }
        apps.remove(app);
        let std_listener = std::net::TcpListener::bind(SocketAddr::new(self.publish_address, port))
            .map_err(|e| {
                format!(
                    "cannot listen on {}:{port} for {app}: {e}",
                    self.publish_address
                )
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
        let route = Arc::new_cyclic(|weak: &std::sync::Weak<Route>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move { accept_loop(listener, weak).await });
            Route {
                port,
                upstreams: RwLock::new(Arc::new(upstreams)),
                next: AtomicUsize::new(0),
                listener: task.abort_handle(),
            }
        });
        apps.insert(app.to_string(), route);
        Ok(())
    }

    /// Stops serving the app's port (stopped or destroyed apps).
    pub fn remove(&self, app: &str) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    /// The next container to send one of the app's requests to (round robin), for the HTTP
    /// router.
    pub fn pick(&self, app: &str) -> Pick {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let Some(route) = apps.get(app) else {
            return Pick::NotServed;
        };
        let upstreams = route.upstreams.read().unwrap_or_else(|p| p.into_inner());
        if upstreams.is_empty() {
            return Pick::NoInstance;
        }
        let next = route.next.fetch_add(1, Ordering::Relaxed);
        Pick::Upstream(upstreams[next % upstreams.len()])
    }

    /// Whether `upstream` is in the app's serving set.
    pub fn serves(&self, app: &str, upstream: SocketAddr) -> bool {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.get(app).is_some_and(|route| {
            route
                .upstreams
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&upstream)
        })
    }

    /// The containers behind the app's port.
    pub fn upstreams(&self, app: &str) -> Option<Vec<SocketAddr>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let route = apps.get(app)?;
        let upstreams = route
            .upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(upstreams.to_vec())
    }
}

async fn accept_loop(listener: TcpListener, route: std::sync::Weak<Route>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(route) = route.upgrade() else { return };
        let upstreams = route
            .upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let first = route.next.fetch_add(1, Ordering::Relaxed);
        drop(route);
        tokio::spawn(forward(client, upstreams, first));
    }
}

/// Connects the client to the first upstream that accepts, trying each once from `first`.
async fn forward(mut client: TcpStream, upstreams: Arc<Vec<SocketAddr>>, first: usize) {
    let _ = client.set_nodelay(true);
    for attempt in 0..upstreams.len() {
        let address = upstreams[(first + attempt) % upstreams.len()];
        let Ok(Ok(mut upstream)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await
        else {
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }
}
