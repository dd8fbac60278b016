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
