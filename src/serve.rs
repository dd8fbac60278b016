//! Wiring: `run` starts every part of a serving control plane (the data plane, adopted or
//! started; the hook socket; the background tasks) around one `Berth`, then serves SSH. Kept
//! apart from `server` (the `Berth` state) so the state does not import what uses it.

use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::push;
use crate::reconcile;
use crate::server::Berth;
use crate::ssh;

/// Serves until the SSH listener fails or the server is told to stop. The caller binds the
/// socket (tests bind port 0). `config_file` is handed to a data plane started here.
pub async fn run(
    berth: Arc<Berth>,
    listener: TcpListener,
    config_file: Option<&Path>,
) -> Result<(), String> {
    let config = &berth.config;
    // The data plane serves the apps' traffic in a process of its own, which outlives this
    // one: adopted when it runs, else started.
    crate::dataplane::ensure(config, config_file).await?;
    if let Some(mut events) = berth.plane.take_events() {
        let weak = Arc::downgrade(&berth);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(berth) = weak.upgrade() else { return };
                match event {
                    crate::dataplane::wire::FromPlane::Trigger(trigger) => {
                        if !berth.inbound.enqueue(trigger) {
                            tracing::warn!("inbound sync dropped: the queue is full");
                        }
                    }
                    crate::dataplane::wire::FromPlane::Refused(counts) => {
                        berth.inbound.add_refused(&counts)
                    }
                    crate::dataplane::wire::FromPlane::Reply { .. } => {}
                }
            }
        });
    }
    berth.sync_plane().await?;
    berth.spawn_background(
        "data-plane-watch",
        crate::dataplane::keep_alive(berth.config.clone(), config_file.map(Path::to_path_buf)),
    );
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
    berth.spawn_background("acme-renewals", crate::acme::renew_loop(berth.clone()));
    // What a crash left half-done is settled before the reconciler's first round.
    let settling = berth.clone();
    berth.spawn_background("reconciler", async move {
        crate::ops::settle_interrupted(&settling).await;
        reconcile::run(settling).await
    });
    berth.spawn_background("retention", crate::disk::prune_loop(berth.clone()));
    berth.spawn_background(
        "webhook-delivery",
        crate::webhooks::dispatch_loop(berth.clone()),
    );
    berth.spawn_background(
        "inbound-syncs",
        crate::webhooks::inbound_loop(berth.clone()),
    );
    // TERM (systemctl stop/restart, berth stop, an upgrade) or INT: stop taking connections
    // and commands, let those under way finish (up to shutdown_timeout), then exit; the data
    // plane serves on.
    let signals = berth.clone();
    tokio::spawn(async move {
        let kind = tokio::signal::unix::SignalKind::terminate;
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(kind()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            return tracing::error!("cannot handle TERM: berth stops at once on it");
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        signals.stop_serving();
    });
    let served = ssh::serve(berth.clone(), listener).await;
    if berth.is_stopping() {
        let limit = berth.config.shutdown_timeout();
        tracing::info!(timeout = ?limit, "stopping: no new connections; waiting for pushes and commands under way");
        let left = berth.idle_within(limit).await;
        if left > 0 {
            tracing::warn!(
                left,
                "stopping with pushes or commands still under way: they fail (pushes are rejected, branches unchanged)"
            );
        }
    }
    berth.shut_down();
    tracing::info!("control plane stopped (the data plane serves on)");
    served
}
