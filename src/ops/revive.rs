//! Revival, for the reconciler: what should run compared with what the engine reports,
//! brought back where it is missing (docker target), and the serving sets pointed at what runs.

use std::net::SocketAddr;

use super::lock::LockedApp;
use super::spec::{app_port, formation, manifest, spec_for, target};
use crate::deploy::render::Target;
use crate::deploy::{ContainerReport, Scheduler};
use crate::domain::AppState;
use crate::output::Output;
use crate::server::Berth;
use crate::store::{App, Release};

/// Who the reconciler's events and state changes are by.
pub const RECONCILER: &str = "reconciler";
const ACTOR: &str = RECONCILER;
/// Restarts by the engine's restart policy after which a release counts as crash-looping.
const CRASH_LOOP_RESTARTS: i64 = 5;

/// Compares what should run for the app with `containers` (what the engine reports of it) and
/// brings back missing or stopped instances (docker target), points the app's port and canary
/// at what runs, and records each finding as an event and a state. For swarm apps it only
/// re-points (the swarm restarts its own tasks, on new host ports).
pub async fn revive(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
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
    match target(berth, app) {
        Target::Swarm => return revive_swarm(berth, scheduler, app, &current).await,
        Target::Systemd => {
            return revive_systemd(berth, scheduler, app, &current, containers).await;
        }
        _ => {}
    }
    let wanted = formation(app).get("web").copied().unwrap_or(1);
    let mine: Vec<&ContainerReport> = containers
        .iter()
        .filter(|c| c.release == current.number && c.process == "web")
        .filter(|c| c.swarm_service.is_none() && c.unit.is_none())
        .collect();
    // The deploy spec (an image inspect) is needed only when something must be brought back:
    // a pass over healthy apps is one engine call in all.
    let gone = |process: &str, index: u32| {
        containers
            .iter()
            .filter(|c| c.release == current.number)
            .filter(|c| c.swarm_service.is_none() && c.unit.is_none())
            .find(|c| c.process == process && c.index == index)
            .is_none_or(|c| c.state != "running" && c.state != "restarting")
    };
    // Other process types (workers): the ones the formation wants that are gone or stopped.
    let formation = formation(app);
    let missing_others: Vec<(String, u32)> = manifest(&current)
        .scalable()
        .flat_map(|(name, _)| {
            let count = formation.get(name).copied().unwrap_or(0);
            (1..=count).map(move |index| (name.clone(), index))
        })
        .filter(|(name, index)| gone(name, *index))
        .collect();
    let needs_revival = (1..=wanted).any(|index| gone("web", index)) || !missing_others.is_empty();
    let spec = if needs_revival {
        match spec_for(berth, scheduler, app, &current).await {
            Ok(spec) => Some(spec),
            Err(message) => {
                // The release's image is gone: nothing can be recreated.
                mark_lost(berth, app, &message, false).await?;
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
                if restarts >= CRASH_LOOP_RESTARTS {
                    let detail = format!("web.{index} keeps crashing (restarted {restarts} times)");
                    mark(berth, app, AppState::Failed, "failed", &detail, false).await?;
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
                let detail = format!("web.{index} (was {was}) cannot be brought back: {message}");
                mark_lost(berth, app, &detail, true).await?;
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
    let port = app_port(berth, app).await?;
    berth.plane.point(&app.name, port, &addresses).await?;
    berth
        .plane
        .set_health(&app.name, manifest(&current).healthcheck)
        .await?;
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
            .plane
            .point_canary(&app.name, Some((&addresses, canary.weight)))
            .await?;
    }
    if healthy && matches!(app.state, AppState::Unknown | AppState::Lost) {
        store
            .set_app_state(app.id, AppState::Running, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A systemd app: systemd restarts a crashed instance itself (same unit, same host port), so
/// the reconciler starts the units that were stopped or failed (written anew when their file
/// is gone), marks a crash loop, and points the app's port at the running web instances of the
/// current release.
async fn revive_systemd(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    current: &Release,
    containers: &[ContainerReport],
) -> Result<(), String> {
    let store = &berth.store;
    let formation = formation(app);
    let wanted_web = formation.get("web").copied().unwrap_or(1);
    let mut wanted: Vec<(String, u32)> = (1..=wanted_web).map(|i| ("web".to_string(), i)).collect();
    for (name, _) in manifest(current).scalable() {
        let count = formation.get(name).copied().unwrap_or(0);
        wanted.extend((1..=count).map(|i| (name.clone(), i)));
    }
    let units = scheduler.units_of(&app.name).await;
    let mut healthy = true;
    let mut revived = false;
    let mut spec = None;
    for (process, index) in &wanted {
        let state = units
            .iter()
            .find(|(u, _)| {
                u.release == current.number && &u.process == process && u.index == *index
            })
            .map(|(_, state)| state);
        let was = match state {
            Some(state) if state.wanted_up() => {
                if state.sub == "auto-restart" {
                    healthy = false;
                }
                if i64::from(state.restarts) >= CRASH_LOOP_RESTARTS {
                    if app.state != AppState::Failed {
                        healthy = false;
                    }
                    let detail = format!(
                        "{process}.{index} keeps crashing (systemd restarted it {} times)",
                        state.restarts
                    );
                    mark(berth, app, AppState::Failed, "failed", &detail, false).await?;
                }
                continue;
            }
            // Being stopped (from outside: berth's own operations hold the app's lock): looked
            // at again next round, once it is down.
            Some(state) if state.active == "deactivating" => {
                healthy = false;
                continue;
            }
            Some(state) => state.active.clone(),
            None => "missing".to_string(),
        };
        if spec.is_none() {
            match spec_for(berth, scheduler, app, current).await {
                Ok(made) => spec = Some(made),
                Err(message) => {
                    mark_lost(berth, app, &message, false).await?;
                    return Ok(());
                }
            }
        }
        let Some(spec) = spec.as_ref() else { continue };
        match scheduler.revive_unit(spec, process, *index).await {
            Ok(done) => {
                revived = true;
                let detail = format!("{done} {process}.{index} (unit was {was})");
                tracing::info!(app = %app.name, %detail, "reconciled");
                store
                    .record_event(Some(app.id), "reconcile", ACTOR, "ok", &detail)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(message) => {
                healthy = false;
                let detail =
                    format!("{process}.{index} (unit was {was}) cannot be brought back: {message}");
                mark_lost(berth, app, &detail, true).await?;
            }
        }
    }
    let live = if revived {
        scheduler
            .instances_of(&app.name, Some(current.number))
            .await?
    } else {
        containers.to_vec()
    };
    let addresses: Vec<SocketAddr> = live
        .iter()
        .filter(|c| c.unit.is_some() && c.release == current.number && c.process == "web")
        .filter(|c| c.state == "running" && c.index <= wanted_web)
        .filter_map(|c| c.address)
        .collect();
    let port = app_port(berth, app).await?;
    berth.plane.point(&app.name, port, &addresses).await?;
    berth
        .plane
        .set_health(&app.name, manifest(current).healthcheck)
        .await?;
    if healthy && matches!(app.state, AppState::Unknown | AppState::Lost) {
        store
            .set_app_state(app.id, AppState::Running, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The app is `lost`: its state moves there (once) and `detail` is recorded as the reason (with
/// `every_time`, again on each round that finds it).
async fn mark_lost(berth: &Berth, app: &App, detail: &str, every_time: bool) -> Result<(), String> {
    mark(berth, app, AppState::Lost, "lost", detail, every_time).await
}

/// A finding of the reconciler: the app moves to `state` (once) and `detail` is recorded as an
/// event with `outcome` (with `every_time`, also when the app was in that state already).
async fn mark(
    berth: &Berth,
    app: &App,
    state: AppState,
    outcome: &str,
    detail: &str,
    every_time: bool,
) -> Result<(), String> {
    let already = app.state == state;
    if !already {
        berth
            .store
            .set_app_state(app.id, state, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    if !already || every_time {
        berth
            .store
            .record_event(Some(app.id), "reconcile", ACTOR, outcome, detail)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A swarm app: the swarm restarts its tasks itself (on new host ports, on any node), so the
/// reconciler only points the app's port at the running web tasks of the current release, read
/// from the swarm API (wherever they run), and records when there are none.
async fn revive_swarm(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    current: &Release,
) -> Result<(), String> {
    let store = &berth.store;
    let tasks = scheduler.swarm_web_tasks(&app.name).await?;
    let mut addresses: Vec<SocketAddr> = tasks
        .iter()
        .filter(|c| c.state == "running" && c.release == current.number)
        .filter_map(|c| c.address)
        .collect();
    addresses.sort_unstable();
    let wanted = formation(app).get("web").copied().unwrap_or(1);
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
    // A task the swarm started anew (on another node after a node's loss, after a crash) is
    // served once it answers: the engine's port proxy takes connections before the app does.
    // The ones served already stay (the router takes out one that stops answering).
    let served = berth.plane.traffic(&app.name).await.unwrap_or_default();
    let health = manifest(current).healthcheck;
    let mut ready = Vec::with_capacity(addresses.len());
    for address in addresses {
        if served.contains_key(&address)
            || crate::deploy::probe::probe(address, health.as_ref())
                .await
                .is_ok()
        {
            ready.push(address);
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    let port = app_port(berth, app).await?;
    berth.plane.point(&app.name, port, &ready).await?;
    if matches!(app.state, AppState::Unknown | AppState::Lost) {
        store
            .set_app_state(app.id, AppState::Running, ACTOR)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The engine does not answer: every running app is `unknown` until it does, with the reason as
/// an event (no lock is taken: nothing is changed on the engine, and an operation in progress
/// moves its app on itself).
pub async fn engine_unreachable(berth: &Berth, apps: &[App], message: &str) {
    for app in apps.iter().filter(|a| a.state == AppState::Running) {
        berth.store.move_app(app.id, AppState::Unknown, ACTOR).await;
        berth
            .store
            .note_event(Some(app.id), "reconcile", ACTOR, "unknown", message)
            .await;
    }
}
