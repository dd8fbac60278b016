//! Settling, at start-up: what a crash of the control plane (`kill -9`, power loss, an abort)
//! left half-done is finished or undone before anything else runs.
//!
//! - A release left `releasing` or `deploying`: if the data plane already serves its
//!   instances (the switch had happened), it is the running release; otherwise it is `failed`
//!   and its containers go. Either way an event says what was interrupted.
//! - An app left in an operation's state (`building`, `deploying`, `scaling`, …) is settled:
//!   `stopped` when it was stopped, `running` when a release runs, else `failed` (or `created`
//!   with no release), with an event naming the state it was in.
//! - An interrupted `ps:scale` is undone: the running release is brought back to the formation
//!   on record (the extra instances leave the serving set, drain and stop; missing ones start).
//! - Routes of apps that no longer exist are dropped from the data plane.
//! - Containers of releases that are neither running nor a canary (a retirement the crash cut
//!   short, a half-started release) are removed once the data plane serves none of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::lock::lock_id;
use super::spec::{app_port, spec_for, usable_target};
use crate::deploy::ContainerReport;
use crate::domain::{AppState, ReleaseStatus};
use crate::output::Output;
use crate::server::Berth;

const ACTOR: &str = "start-up";

/// Settles every app an interrupted operation left unsettled (see the module doc).
pub async fn settle_interrupted(berth: &Berth) {
    let apps = match berth.store.apps().await {
        Ok(apps) => apps,
        Err(error) => return tracing::error!(%error, "cannot read apps to settle"),
    };
    // Routes of apps that no longer exist go (a destroy the data plane missed).
    let names: Vec<String> = apps.iter().map(|a| a.name.to_string()).collect();
    if let Err(error) = berth.plane.retain(names).await {
        tracing::warn!(%error, "the data plane keeps routes of apps that may be gone");
    }
    let scheduler = berth.scheduler_within(Duration::from_secs(5)).await.ok();
    let mut containers = match &scheduler {
        Some(scheduler) => scheduler.all_instances().await.unwrap_or_default(),
        None => HashMap::new(),
    };
    for app in apps {
        let Ok(app) = lock_id(berth, app.id).await else {
            continue;
        };
        let mine = containers.remove(app.name.as_str()).unwrap_or_default();
        let serving: Vec<SocketAddr> = berth
            .plane
            .traffic(&app.name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, what)| what != "canary")
            .map(|(address, _)| address)
            .collect();
        let releases = berth.store.releases(app.id, 50).await.unwrap_or_default();
        let mut notes = Vec::new();
        for release in releases.iter().filter(|r| {
            matches!(
                r.status,
                ReleaseStatus::Releasing | ReleaseStatus::Deploying
            )
        }) {
            let its = |c: &&ContainerReport| c.release == release.number && c.process == "web";
            let switched = !serving.is_empty()
                && serving
                    .iter()
                    .all(|address| mine.iter().filter(its).any(|c| c.address == Some(*address)));
            if switched {
                let port = serving.first().map_or(0, |a| a.port());
                if let Err(error) = berth.store.mark_release_running(release, port).await {
                    tracing::error!(app = %app.name, %error, "cannot record the release");
                    continue;
                }
                notes.push(format!(
                    "v{} was serving when berth stopped: it is the running release",
                    release.number
                ));
            } else {
                berth
                    .store
                    .move_release(release.id, ReleaseStatus::Failed)
                    .await;
                notes.push(format!(
                    "v{} did not go live: berth stopped during its deploy",
                    release.number
                ));
            }
        }
        if !app.state.is_settled() {
            let running = berth.store.running_release(app.id).await.ok().flatten();
            let settled = if app.stopped {
                AppState::Stopped
            } else if running.is_some() {
                AppState::Running
            } else if releases.is_empty() {
                AppState::Created
            } else {
                AppState::Failed
            };
            notes.push(format!(
                "was {} when berth stopped; now {settled}",
                app.state
            ));
            if let Err(error) = berth.store.set_app_state(app.id, settled, ACTOR).await {
                tracing::error!(app = %app.name, %error, "cannot settle the app");
            }
        }
        for note in &notes {
            tracing::info!(app = %app.name, %note, "settled");
            berth
                .store
                .note_event(Some(app.id), "interrupted", ACTOR, "settled", note)
                .await;
        }
        // Containers no release of the app should have running: a retirement or a deploy the
        // crash cut short (docker target; swarm tasks and one-off runs are not touched).
        let Some(scheduler) = &scheduler else {
            continue;
        };
        if app.state == AppState::Scaling && !app.stopped {
            resume_formation(berth, scheduler, &app).await;
        }
        let running = berth
            .store
            .running_release(app.id)
            .await
            .ok()
            .flatten()
            .map(|r| r.number);
        let canary = berth
            .store
            .canary(app.id)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.release);
        let mut orphaned: Vec<i64> = mine
            .iter()
            .filter(|c| c.swarm_service.is_none() && c.release > 0 && c.process != "run")
            .filter(|c| Some(c.release) != running && Some(c.release) != canary)
            .filter(|c| c.address.is_none_or(|a| !serving.contains(&a)))
            .map(|c| c.release)
            .collect();
        orphaned.sort_unstable();
        orphaned.dedup();
        if orphaned.is_empty() {
            continue;
        }
        let Ok(port) = app_port(berth, &app).await else {
            continue;
        };
        for number in orphaned {
            tracing::info!(app = %app.name, release = number, "removing an interrupted release's containers");
            scheduler
                .retire_release(&app.name, number, &berth.app_port(&app.name, port))
                .await;
            berth
                .store
                .note_event(
                    Some(app.id),
                    "interrupted",
                    ACTOR,
                    "cleaned",
                    &format!("removed the containers v{number} left behind"),
                )
                .await;
        }
    }
}

/// Brings the running release back to the formation on record (an interrupted `ps:scale`).
async fn resume_formation(
    berth: &Berth,
    scheduler: &crate::deploy::Scheduler,
    app: &crate::store::App,
) {
    let Ok(Some(current)) = berth.store.running_release(app.id).await else {
        return;
    };
    let scaled = async {
        let spec = spec_for(berth, scheduler, app, &current).await?;
        let target = usable_target(berth, app).await?;
        let port = app_port(berth, app).await?;
        scheduler
            .scale(
                target,
                &spec,
                &Output::discard(),
                &berth.app_port(&app.name, port),
            )
            .await
    }
    .await;
    let note = match scaled {
        Ok(instances) => format!(
            "ps:scale was cut short: back to the formation on record ({} web)",
            instances.len()
        ),
        Err(message) => format!(
            "ps:scale was cut short and the formation on record could not be restored: {message}"
        ),
    };
    berth
        .store
        .note_event(Some(app.id), "interrupted", ACTOR, "settled", &note)
        .await;
}
