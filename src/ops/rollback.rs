//! `releases:rollback`: an earlier release's image and config as a new release.

use std::collections::BTreeMap;

use super::deploy::{Plan, Source};
use super::follow::create_deploy_and_follow;
use super::lock::LockedApp;
use crate::domain::AppState;
use crate::error::internal;
use crate::output::Output;
use crate::server::Berth;
use crate::store::Release;

/// Deploys `target`, an earlier release, as a new release of its image with its config (which
/// becomes the app's); on failure `current` keeps running.
pub async fn rollback(
    berth: &Berth,
    app: &LockedApp,
    current: &Release,
    target: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let scheduler = berth.scheduler().await?;
    store.move_app(app.id, AppState::RollingBack, actor).await;
    crate::crash::point("rollback");
    out.step(&format!(
        "Rolling {} back to v{} ({})",
        app.name, target.number, target.image
    ));
    let config: BTreeMap<String, String> = target.config.0.clone();
    let description = format!("rollback to v{}", target.number);
    let plan = Plan {
        commit: &target.commit_sha,
        config: &config,
        manifest: &target.manifest,
        description: &description,
        actor,
        canary: None,
    };
    match create_deploy_and_follow(
        berth,
        &scheduler,
        app,
        Source::Existing(&target.image),
        plan,
        out,
    )
    .await
    {
        Ok(_) => {
            // The app's config follows the release it now runs.
            store
                .replace_config(app.id, &config)
                .await
                .map_err(internal)?;
            Ok(())
        }
        Err(message) => {
            berth.store.move_app(app.id, AppState::Running, actor).await;
            Err(format!("{message}; v{} keeps running", current.number))
        }
    }
}
