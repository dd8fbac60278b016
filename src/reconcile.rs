//! The reconciler: at startup and every few seconds, compare what the DB says should run with
//! what the engine reports, bring back what died, and record each finding as an event.
//!
//! It never races an operation: an app whose deploy lock is held is skipped this round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::deploy::render::Target;
use crate::deploy::{ContainerReport, Scheduler, names, network};
use crate::domain::AppState;
use crate::ops;
use crate::output::Output;
use crate::server::Berth;
use crate::store::App;
use crate::store::Release;

/// How often the reconciler looks.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Restarts by the engine's restart policy after which a release counts as crash-looping.
const CRASH_LOOP_RESTARTS: i64 = 5;
const ACTOR: &str = "reconciler";

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
            links.insert(app.name.clone(), deps);
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
        Err(message) => {
            for app in apps.iter().filter(|a| a.state == AppState::Running) {
                berth.store.move_app(app.id, AppState::Unknown, ACTOR).await;
                berth
                    .store
                    .note_event(Some(app.id), "reconcile", ACTOR, "unknown", &message)
                    .await;
            }
            return;
        }
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
        let containers = by_app.remove(&app.name).unwrap_or_default();
        if let Err(error) = reconcile_app(berth, &scheduler, &app, &containers).await {
            tracing::warn!(app = %app.name, %error, "reconcile failed");
        }
    }
}

async fn reconcile_app(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    containers: &[ContainerReport],
) -> Result<(), String> {
    let store = &berth.store;
    let Some(current) = store
        .running_release(app.id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if ops::target(berth, app)? == Target::Swarm {
        return reconcile_swarm(berth, app, &current, containers).await;
    }
    let wanted = ops::formation(app).get("web").copied().unwrap_or(1);
    let mine: Vec<&ContainerReport> = containers
        .iter()
        .filter(|c| c.release == current.number && c.process == "web")
        .filter(|c| c.swarm_service.is_none())
        .collect();
    // The deploy spec (an image inspect) is needed only when something must be brought back:
    // a pass over healthy apps is one engine call in all.
    let gone = |process: &str, index: u32| {
        containers
            .iter()
            .filter(|c| c.release == current.number && c.swarm_service.is_none())
            .find(|c| c.process == process && c.index == index)
            .is_none_or(|c| c.state != "running" && c.state != "restarting")
    };
    // Other process types (workers): the ones the formation wants that are gone or stopped.
    let formation = ops::formation(app);
    let missing_others: Vec<(String, u32)> = ops::manifest(&current)
        .scalable()
        .flat_map(|(name, _)| {
            let count = formation.get(name).copied().unwrap_or(0);
            (1..=count).map(move |index| (name.clone(), index))
        })
        .filter(|(name, index)| gone(name, *index))
        .collect();
    let needs_revival = (1..=wanted).any(|index| gone("web", index)) || !missing_others.is_empty();
    let spec = if needs_revival {
        match ops::spec_for(berth, scheduler, app, &current).await {
            Ok(spec) => Some(spec),
            Err(message) => {
                // The release's image is gone: nothing can be recreated.
                if app.state != AppState::Lost {
                    store
                        .set_app_state(app.id, AppState::Lost, ACTOR)
                        .await
                        .map_err(|e| e.to_string())?;
                    store
                        .record_event(Some(app.id), "reconcile", ACTOR, "lost", &message)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
        }
    } else {
        None
    };
    let mut healthy = true;
    let mut revived = false;
    for index in 1..=wanted {
        let existing = mine.iter().find(|c| c.index == index).copied();
        match existing {
            Some(container) if container.state == "running" => continue,
            Some(container) if container.state == "restarting" => {
                // The engine's restart policy is on it; count the restarts to spot a crash loop.
                let restarts = scheduler
                    .with_details(vec![container.clone()])
                    .await
                    .first()
                    .map_or(0, |r| r.restarts);
                if restarts >= CRASH_LOOP_RESTARTS && app.state != AppState::Failed {
                    store
                        .set_app_state(app.id, AppState::Failed, ACTOR)
                        .await
                        .map_err(|e| e.to_string())?;
                    let detail = format!("web.{index} keeps crashing (restarted {restarts} times)");
                    store
                        .record_event(Some(app.id), "reconcile", ACTOR, "failed", &detail)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                healthy = false;
                continue;
            }
            _ => {}
        }
        let was = existing
            .map(|c| c.state.clone())
            .unwrap_or_else(|| "missing".to_string());
        let Some(spec) = spec.as_ref() else { continue }; // set whenever a revival is needed
        match scheduler.revive(spec, index, existing).await {
            Ok(done) => {
                revived = true;
                let detail = format!("{done} web.{index} (was {was})");
                tracing::info!(app = %app.name, %detail, "reconciled");
                store
                    .record_event(Some(app.id), "reconcile", ACTOR, "ok", &detail)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(message) => {
                healthy = false;
                if app.state != AppState::Lost {
                    store
                        .set_app_state(app.id, AppState::Lost, ACTOR)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let detail = format!("web.{index} (was {was}) cannot be brought back: {message}");
                store
                    .record_event(Some(app.id), "reconcile", ACTOR, "lost", &detail)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    if let Some(spec) = spec.as_ref() {
        for (name, index) in &missing_others {
            let Some(process) = spec.others.iter().find(|p| &p.name == name) else {
                continue;
            };
            let detail = match scheduler
                .start_other(spec, process, *index, &Output::discard())
                .await
            {
                Ok(_) => format!("recreated {name}.{index}"),
                Err(message) => format!("{name}.{index} cannot be brought back: {message}"),
            };
            tracing::info!(app = %app.name, %detail, "reconciled");
            store
                .record_event(Some(app.id), "reconcile", ACTOR, "ok", &detail)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // Serve exactly the running instances of the current release (after a berth restart this
    // is what brings the app's port back).
    let serving = if revived {
        scheduler
            .instances_of(&app.name, Some(current.number))
            .await?
    } else {
        mine.into_iter().cloned().collect()
    };
    let addresses: Vec<SocketAddr> = serving
        .iter()
        .filter(|c| c.process == "web" && c.state == "running" && c.index <= wanted)
        .filter_map(|c| c.address)
        .collect();
    let port = ops::app_port(berth, app).await?;
    berth.routes.point(&app.name, port, &addresses)?;
    berth
        .routes
        .set_health(&app.name, ops::manifest(&current).healthcheck);
    // A canary serves its share again once its instances run (after a berth restart too).
    if let Some(canary) = store.canary(app.id).await.map_err(|e| e.to_string())?
        && let Some(number) = canary.release
    {
        let addresses: Vec<SocketAddr> = containers
            .iter()
            .filter(|c| c.release == number && c.process == "web" && c.state == "running")
            .filter(|c| c.swarm_service.is_none())
            .filter_map(|c| c.address)
            .collect();
        berth
            .routes
            .point_canary(&app.name, Some((&addresses, canary.weight)));
    }
    if healthy && matches!(app.state, AppState::Unknown | AppState::Lost) {
        store
            .set_app_state(app.id, AppState::Running, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A swarm app: the swarm restarts its tasks itself (on new host ports), so the reconciler only
/// points the app's port at the running web tasks of the current release and records when
/// there are none.
async fn reconcile_swarm(
    berth: &Berth,
    app: &App,
    current: &Release,
    containers: &[ContainerReport],
) -> Result<(), String> {
    let store = &berth.store;
    let service = names::service_name(&app.name, "web");
    let mut addresses: Vec<SocketAddr> = containers
        .iter()
        .filter(|c| c.swarm_service.as_deref() == Some(service.as_str()))
        .filter(|c| c.state == "running" && c.release == current.number)
        .filter_map(|c| c.address)
        .collect();
    addresses.sort_unstable();
    let wanted = ops::formation(app).get("web").copied().unwrap_or(1);
    if addresses.is_empty() && wanted > 0 {
        if app.state == AppState::Running {
            store
                .set_app_state(app.id, AppState::Lost, ACTOR)
                .await
                .map_err(|e| e.to_string())?;
            let detail = format!("no web task of v{} runs on the swarm", current.number);
            store
                .record_event(Some(app.id), "reconcile", ACTOR, "lost", &detail)
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let port = ops::app_port(berth, app).await?;
    berth.routes.point(&app.name, port, &addresses)?;
    if matches!(app.state, AppState::Unknown | AppState::Lost) {
        store
            .set_app_state(app.id, AppState::Running, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
