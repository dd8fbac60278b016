//! Canaries: a release beside the current one that gets a weighted share of the requests
//! (docker target), then promoted or aborted.

use std::net::SocketAddr;

use super::lock::LockedApp;
use super::spec::*;
use crate::deploy::Scheduler;
use crate::deploy::render::Target;
use crate::domain::{AppState, ReleaseStatus};
use crate::output::Output;
use crate::server::Berth;
use crate::store::{App, Release};

/// Refuses a new release of an app that has a canary (config changes, rollbacks): which of the
/// two releases it would follow is ambiguous.
pub async fn refuse_during_canary(berth: &Berth, app: &App) -> Result<(), String> {
    let canary = berth
        .store
        .canary(app.id)
        .await
        .map_err(|e| format!("internal error reading the canary: {e}"))?;
    match canary {
        None => Ok(()),
        Some(canary) => Err(format!(
            "{} has a canary ({}): canary:promote {} or canary:abort {} first",
            app.name,
            describe_canary(&canary),
            app.name,
            app.name
        )),
    }
}

pub fn describe_canary(canary: &crate::store::Canary) -> String {
    match canary.release {
        Some(number) => format!("v{number} at {}%", canary.weight),
        None => format!("the next push, at {}%", canary.weight),
    }
}

/// Canaries run on the docker target: the router splits requests between two releases' containers.
pub fn canary_target(berth: &Berth, app: &App) -> Result<(), String> {
    match target(berth, app) {
        Target::Docker => Ok(()),
        other => Err(format!(
            "canaries run on the docker target; {} runs on {other} (apps:set {} target=docker)",
            app.name, app.name
        )),
    }
}

/// Starts the release's web instances beside the current release's and sends `weight` % of
/// requests to them; a canary that was already serving is replaced (its containers stop once
/// their requests are done). The current release keeps every other request.
pub async fn deploy_canary(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    release: &Release,
    weight: u8,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    canary_target(berth, app)?;
    let store = &berth.store;
    let internal = |e: sqlx::Error| format!("internal error recording the canary: {e}");
    let previous = store.canary(app.id).await.map_err(internal)?;
    let port = app_port(berth, app).await?;
    store
        .move_release(release.id, ReleaseStatus::Deploying)
        .await;
    out.step(&format!("Deploying a canary to {}", Target::Docker));
    let spec = spec_for(berth, scheduler, app, release).await?;
    let instances = scheduler.deploy_beside(&spec, out).await?;
    let addresses: Vec<SocketAddr> = instances.iter().filter_map(|i| i.address).collect();
    berth
        .plane
        .point_canary(&app.name, Some((&addresses, weight)))
        .await?;
    store.set_canary_release(release).await.map_err(internal)?;
    store.move_app(app.id, AppState::Running, actor).await;
    if let Some(old) = previous.and_then(|c| c.release)
        && old != release.number
    {
        if let Ok(Some(old)) = store.release(app.id, old).await {
            store.move_release(old.id, ReleaseStatus::Aborted).await;
        }
        scheduler
            .retire_release(&app.name, old, &berth.app_port(&app.name, port))
            .await;
        out.detail(&format!("v{old} (the previous canary) stopped"));
    }
    store
        .note_event(
            Some(app.id),
            "canary",
            actor,
            "started",
            &format!("v{} at {weight}%", release.number),
        )
        .await;
    let current = store
        .running_release(app.id)
        .await
        .ok()
        .flatten()
        .map_or("the current release".to_string(), |r| {
            format!("v{}", r.number)
        });
    out.step(&format!(
        "{} v{} is a canary: {weight}% of requests to {} go to it, the rest to {current}",
        app.name,
        release.number,
        berth.app_url(&app.name, port)
    ));
    out.detail(&format!(
        "canary:weight {} N, canary:promote {} or canary:abort {}",
        app.name, app.name, app.name
    ));
    Ok(())
}

/// Makes the canary the current release: all requests go to it at once, its other process
/// types start, and the old release's containers stop once their requests are done.
pub async fn promote_canary(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    canary: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let old = store.running_release(app.id).await.ok().flatten();
    let port = app_port(berth, app).await?;
    let Some(canary_addresses) = berth.plane.promote_canary(&app.name).await? else {
        return Err(format!(
            "v{} is not serving (its containers are gone): canary:abort {}",
            canary.number, app.name
        ));
    };
    crate::crash::point("promote");
    store
        .mark_release_running(canary, canary_addresses.first().map_or(0, |a| a.port()))
        .await
        .map_err(|e| format!("internal error recording the release: {e}"))?;
    store
        .end_canary(app.id, ReleaseStatus::Running)
        .await
        .map_err(|e| format!("internal error recording the release: {e}"))?;
    out.step(&format!("v{} now gets every request", canary.number));
    // The full formation of the promoted release (other process types, more web instances).
    let spec = spec_for(berth, scheduler, app, canary).await?;
    scheduler
        .scale(Target::Docker, &spec, out, &berth.app_port(&app.name, port))
        .await?;
    if let Some(old) = &old {
        out.detail(&format!("v{} stops once its requests are done", old.number));
        scheduler
            .retire_release(&app.name, old.number, &berth.app_port(&app.name, port))
            .await;
    }
    store
        .note_event(
            Some(app.id),
            "canary",
            actor,
            "promoted",
            &format!("v{}", canary.number),
        )
        .await;
    Ok(())
}

/// Ends the canary (release `number`, none when it waited for a push): every request goes to
/// the current release again, and the canary's containers stop once their requests are done
/// (its release is marked `aborted`).
pub async fn abort_canary(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    number: Option<i64>,
    actor: &str,
) -> Result<(), String> {
    let store = &berth.store;
    berth.plane.point_canary(&app.name, None).await?;
    store
        .end_canary(app.id, ReleaseStatus::Aborted)
        .await
        .map_err(|e| format!("internal error recording the canary: {e}"))?;
    if let Some(number) = number {
        let port = app_port(berth, app).await?;
        scheduler
            .retire_release(&app.name, number, &berth.app_port(&app.name, port))
            .await;
    }
    store
        .note_event(
            Some(app.id),
            "canary",
            actor,
            "aborted",
            &number.map_or("before a push".to_string(), |n| format!("v{n}")),
        )
        .await;
    Ok(())
}

/// Sends `weight` % of the app's requests to its canary from now on; gives the canary as it
/// was (none: the app has no canary, and nothing changed).
pub async fn set_canary_weight(
    berth: &Berth,
    app: &LockedApp,
    weight: u8,
    actor: &str,
) -> Result<Option<crate::store::Canary>, String> {
    let store = &berth.store;
    let Some(canary) = store.canary(app.id).await.map_err(crate::error::internal)? else {
        return Ok(None);
    };
    store
        .set_canary_weight(app.id, weight)
        .await
        .map_err(crate::error::internal)?;
    berth.plane.set_canary_weight(&app.name, weight).await?;
    store
        .note_event(
            Some(app.id),
            "canary",
            actor,
            "weight",
            &format!("{}% -> {weight}%", canary.weight),
        )
        .await;
    Ok(Some(canary))
}
