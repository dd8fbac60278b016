//! The reconciler: at startup and every few seconds, compare what the DB says should run with
//! what the engine reports, bring back what died, and record each finding as an event.
//!
//! It never races an operation: an app whose deploy lock is held is skipped this round.

use std::sync::Arc;
use std::time::Duration;

use crate::deploy::network;
use crate::ops;
use crate::server::Berth;

/// How often the reconciler looks.
pub const INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(berth: Arc<Berth>) {
    adopt_legacy_network(&berth).await;
    loop {
        // Until the build network's firewall stands (an engine down at start), members'
        // builds get no network: tried again every round.
        if !network::build_network_guarded()
            && let Ok(scheduler) = berth.scheduler_within(Duration::from_secs(2)).await
            && let Err(message) = scheduler
                .guard_build_network(&berth.config.build_subnet)
                .await
        {
            tracing::error!(%message, "members' builds run without a network");
        }
        reconcile_once(&berth).await;
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Containers started by a berth from before networks per app move onto their apps' networks
/// (and those of the apps they are linked to) once, at start.
async fn adopt_legacy_network(berth: &Berth) {
    let Ok(scheduler) = berth.scheduler_within(Duration::from_secs(2)).await else {
        return;
    };
    let mut links = std::collections::HashMap::new();
    for app in berth.store.apps().await.unwrap_or_default() {
        if let Ok(deps) = ops::active_links(berth, &app).await {
            links.insert(app.name.to_string(), deps);
        }
    }
    scheduler.adopt_legacy_network(&links).await;
}

pub async fn reconcile_once(berth: &Berth) {
    let apps = match berth.store.apps().await {
        Ok(apps) => apps,
        Err(error) => return tracing::error!(%error, "reconciler cannot read apps"),
    };
    let live = match berth.scheduler_within(Duration::from_secs(2)).await {
        Ok(scheduler) => scheduler.all_instances().await.map(|all| (scheduler, all)),
        Err(message) => Err(message),
    };
    let (scheduler, mut by_app) = match live {
        Ok(live) => live,
        Err(message) => return ops::engine_unreachable(berth, &apps, &message).await,
    };
    for app in apps {
        if app.stopped || !app.state.is_settled() {
            continue;
        }
        // Busy apps are skipped; read again under the lock: an operation may have renamed or
        // changed it first.
        let Some(app) = ops::try_lock(berth, app.id).await else {
            continue;
        };
        if app.stopped || !app.state.is_settled() {
            continue;
        }
        let containers = by_app.remove(app.name.as_str()).unwrap_or_default();
        if let Err(error) = ops::revive(berth, &scheduler, &app, &containers).await {
            tracing::warn!(app = %app.name, %error, "reconcile failed");
        }
    }
}
