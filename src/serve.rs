//! Wiring: `run` starts every part of a serving berth (the hook socket, the router and its
//! HTTPS and admin listeners, the background tasks) around one `Berth`, then serves SSH. Kept
//! apart from `server` (the `Berth` state) so the state does not import what uses it.

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::push;
use crate::reconcile;
use crate::server::Berth;
use crate::ssh;

/// Serves until the SSH listener fails. The caller binds the socket (tests bind port 0).
pub async fn run(berth: Arc<Berth>, listener: TcpListener) -> Result<(), String> {
    let config = &berth.config;
    push::install_hooks(&config.hooks_dir()).map_err(|e| format!("cannot write hooks: {e}"))?;
    let socket_path = config.hook_socket_path();
    if let Some(dir) = socket_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&socket_path);
    let hooks = UnixListener::bind(&socket_path)
        .map_err(|e| format!("cannot bind {}: {e}", socket_path.display()))?;
    tokio::spawn(push::serve_hooks(berth.clone(), hooks));
    // The router sees only the data plane's part of berth.
    let plane = crate::plane::Plane::new(berth.clone());
    if let Some(address) = config.http_listen() {
        let http = TcpListener::bind(address).await.map_err(|e| {
            format!(
                "cannot listen on {address} for the HTTP router: {e}; set http_listen to a free address, or \"off\""
            )
        })?;
        crate::router::serve(plane.clone(), http, None)?;
    }
    if let Some(address) = config.https_listen() {
        let https = TcpListener::bind(address).await.map_err(|e| {
            format!(
                "cannot listen on {address} for HTTPS: {e}; set https_listen to a free address, or \"off\""
            )
        })?;
        // The certificate of the app a name is served for (custom domain or APP.base).
        let weak = Arc::downgrade(&berth);
        let tls = crate::tls::server_config(Box::new(move |name| {
            let berth = weak.upgrade()?;
            let app = berth.app_for_host(name)?;
            berth.certs.key_for(&app, name)
        }))?;
        crate::router::serve(plane.clone(), https, Some(tls))?;
    }
    berth.spawn_background("acme-renewals", crate::acme::renew_loop(berth.clone()));
    if let Some(address) = config.admin_listen() {
        let admin = TcpListener::bind(address).await.map_err(|e| {
            format!(
                "cannot listen on {address} for /metrics: {e}; set admin_listen to a free address, or \"off\""
            )
        })?;
        tokio::spawn(crate::router::serve_admin(plane.clone(), admin));
    }
    berth.spawn_background("reconciler", reconcile::run(berth.clone()));
    berth.spawn_background("retention", crate::disk::prune_loop(berth.clone()));
    berth.spawn_background(
        "webhook-delivery",
        crate::webhooks::dispatch_loop(berth.clone()),
    );
    berth.spawn_background(
        "inbound-syncs",
        crate::webhooks::inbound_loop(berth.clone()),
    );
    let served = ssh::serve(berth.clone(), listener).await;
    berth.shut_down();
    served
}
