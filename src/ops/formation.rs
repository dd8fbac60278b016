//! The formation of a running app: scale, rolling restart, stop and start. Each takes the app
//! locked; a failed change leaves what ran before.

use std::collections::BTreeMap;

use super::deploy::stop_everywhere;
use super::follow::deploy_release;
use super::lock::LockedApp;
use super::spec::{app_port, formation, spec_for, usable_target};
use crate::domain::{AppState, ReleaseStatus};
use crate::error::internal;
use crate::output::Output;
use crate::server::Berth;
use crate::store::{App, Release};

/// `web=2 worker=1`, as commands show a formation.
pub fn describe_formation(formation: &BTreeMap<String, u32>) -> String {
    formation
        .iter()
        .map(|(p, n)| format!("{p}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The release the app runs, or `"APP {missing}"`.
pub async fn running_release(berth: &Berth, app: &App, missing: &str) -> Result<Release, String> {
    berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?
        .ok_or_else(|| format!("{} {missing}", app.name))
}

/// Makes `wanted` the app's formation. When the app runs, its target is brought to it and the
/// number of web instances serving is given; when it does not, the formation is only recorded
/// (none: it applies when it runs). On failure the formation stays as it was.
pub async fn scale(
    berth: &Berth,
    app: &LockedApp,
    wanted: &BTreeMap<String, u32>,
    actor: &str,
    out: &Output,
) -> Result<Option<usize>, String> {
    let store = &berth.store;
    let formation_json = serde_json::to_string(wanted).map_err(internal)?;
    let current = store.running_release(app.id).await.map_err(internal)?;
    let (Some(current), false) = (current, app.stopped) else {
        store
            .set_formation(app.id, &formation_json)
            .await
            .map_err(internal)?;
        return Ok(None);
    };
    store.move_app(app.id, AppState::Scaling, actor).await;
    out.step(&format!(
        "Scaling {} to {}",
        app.name,
        describe_formation(wanted)
    ));
    let scheduler = berth.scheduler().await?;
    let mut scaled = App::clone(app);
    scaled.formation.0 = wanted.clone();
    let spec = spec_for(berth, &scheduler, &scaled, &current).await?;
    let port = app_port(berth, app).await?;
    let target = usable_target(berth, app).await?;
    match scheduler
        .scale(target, &spec, out, &berth.app_port(&app.name, port))
        .await
    {
        Ok(instances) => {
            store
                .set_formation(app.id, &formation_json)
                .await
                .map_err(internal)?;
            store.move_app(app.id, AppState::Running, actor).await;
            store
                .note_event(
                    Some(app.id),
                    "scale",
                    actor,
                    "ok",
                    &describe_formation(wanted),
                )
                .await;
            Ok(Some(instances.len()))
        }
        Err(message) => {
            store.move_app(app.id, AppState::Running, actor).await;
            store
                .note_event(Some(app.id), "scale", actor, "failed", &message)
                .await;
            Err(format!(
                "{message}; the formation stays {}",
                describe_formation(&formation(app))
            ))
        }
    }
}

/// Stops everything the app runs (image, config and data stay); a canary ends here. Gives the
/// number of instances stopped.
pub async fn stop(
    berth: &Berth,
    app: &LockedApp,
    actor: &str,
    out: &Output,
) -> Result<usize, String> {
    let store = &berth.store;
    let scheduler = berth.scheduler().await?;
    store.move_app(app.id, AppState::Stopping, actor).await;
    out.step(&format!("Stopping {}", app.name));
    berth.plane.remove(&app.name).await?;
    let stopped = stop_everywhere(berth, &scheduler, &app.name, false).await?;
    // Its containers are gone with the rest: a canary ends here.
    if store.canary(app.id).await.map_err(internal)?.is_some() {
        store
            .end_canary(app.id, ReleaseStatus::Aborted)
            .await
            .map_err(internal)?;
        out.detail("its canary is aborted");
    }
    store.set_stopped(app.id, true).await.map_err(internal)?;
    store.move_app(app.id, AppState::Stopped, actor).await;
    Ok(stopped)
}

/// Deploys the app's current release again with its formation (`ps:start`).
pub async fn start(
    berth: &Berth,
    app: &LockedApp,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let current = running_release(berth, app, "has no release to start: push one first").await?;
    let scheduler = berth.scheduler().await?;
    store.move_app(app.id, AppState::Starting, actor).await;
    out.step(&format!("Starting {} v{}", app.name, current.number));
    if let Err(message) = deploy_release(berth, &scheduler, app, &current, actor, out).await {
        store.move_app(app.id, AppState::Failed, actor).await;
        return Err(message);
    }
    Ok(())
}

/// Replaces every instance of the running release, one at a time (each after the previous
/// answers), with the app's current settings (mounts included); `why` goes into the event.
pub async fn restart(
    berth: &Berth,
    app: &LockedApp,
    actor: &str,
    why: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let current = running_release(berth, app, "has no release running").await?;
    let scheduler = berth.scheduler().await?;
    let spec = spec_for(berth, &scheduler, app, &current).await?;
    store.move_app(app.id, AppState::Restarting, actor).await;
    out.step(&format!("Restarting {}, one container at a time", app.name));
    let port = app_port(berth, app).await?;
    let target = usable_target(berth, app).await?;
    let result = scheduler
        .restart(target, &spec, out, &berth.app_port(&app.name, port))
        .await;
    let outcome = if result.is_ok() {
        AppState::Running
    } else {
        AppState::Failed
    };
    store.move_app(app.id, outcome, actor).await;
    store
        .note_event(
            Some(app.id),
            "restart",
            actor,
            if result.is_ok() { "ok" } else { "failed" },
            why,
        )
        .await;
    result
}
