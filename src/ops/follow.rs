//! Deploys that the linked apps follow: after a release is put into service, the apps linked
//! to it are brought up to date (`links::refresh_dependents`, a loop, never a recursion).

use super::deploy::{Plan, Source, create_and_deploy, deploy_only};
use super::links::refresh_dependents;
use super::lock::LockedApp;
use crate::deploy::Scheduler;
use crate::output::Output;
use crate::server::Berth;
use crate::store::Release;

/// `create_and_deploy`, then (unless it is a canary) the apps linked to this one follow
/// (`refresh_dependents`). What commands and pushes call; the refresh's own redeploys call
/// `create_and_deploy`, so a deploy never recurses into the links.
pub async fn create_deploy_and_follow(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    source: Source<'_>,
    plan: Plan<'_>,
    out: &Output,
) -> Result<Release, String> {
    let (canary, actor) = (plan.canary, plan.actor);
    let release = create_and_deploy(berth, scheduler, app, source, plan, out).await?;
    if canary.is_none() {
        refresh_dependents(berth, scheduler, app, actor, out).await;
    }
    Ok(release)
}

/// Puts an already recorded release into service with the app's formation and marks it running.
/// Deploys an existing release, then brings the apps linked to this one up to date.
#[tracing::instrument(name = "deploy", skip_all, fields(app = %app.name, release = release.number))]
pub async fn deploy_release(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    release: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    deploy_only(berth, scheduler, app, release, actor, out).await?;
    // Apps linked to this one follow it when its address changed (a new port, a new name).
    refresh_dependents(berth, scheduler, app, actor, out).await;
    Ok(())
}
