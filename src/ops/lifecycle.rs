//! An app's life as a whole: rename (its containers, routes and links follow), destroy
//! (everything it has on this host goes), and moving it to another target.

use super::deploy::stop_everywhere;
use super::follow::deploy_release;
use super::lock::LockedApp;
use super::spec::target;
use crate::dataplane::wire::Observed;
use crate::deploy::render::Target;
use crate::domain::{AppState, ReleaseStatus};
use crate::error::internal;
use crate::git;
use crate::names::AppName;
use crate::output::Output;
use crate::server::Berth;

/// Renames the app: its repo, its row, its certificates and domains; a running app is deployed
/// again under the new name (a canary ends), then the old-named containers and network go.
pub async fn rename(
    berth: &Berth,
    mut app: LockedApp,
    new_name: &AppName,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    if berth.store.app(new_name).await.map_err(internal)?.is_some() {
        return Err(format!("app {new_name} already exists"));
    }
    let old_name = app.name.clone();
    let repos = berth.config.repos_dir();
    let (old_repo, new_repo) = (
        git::repo_path(&repos, &old_name),
        git::repo_path(&repos, new_name),
    );
    std::fs::rename(&old_repo, &new_repo).map_err(|e| format!("cannot move the repo: {e}"))?;
    if let Err(error) = berth.store.rename_app(app.id, new_name).await {
        let _ = std::fs::rename(&new_repo, &old_repo);
        return Err(internal(error));
    }
    app.reload(berth).await?;
    berth
        .store
        .note_event(
            Some(app.id),
            "app.renamed",
            actor,
            "ok",
            &format!("{old_name} -> {new_name}"),
        )
        .await;
    // Containers carry the app's name: run the current release under the new one, then retire
    // the old-named containers.
    out.step(&format!("Renamed {old_name} to {new_name}"));
    berth.certs.rename(old_name.as_str(), new_name.as_str());
    berth.plane.reload_certs().await?;
    berth
        .plane
        .observe(Observed::Forget {
            app: old_name.to_string(),
        })
        .await;
    berth.reload_domains().await?;
    // Inbound tokens follow the app's id: a renamed app keeps its hook under its new name, a
    // destroyed one's token stops working, and no later app of the old name inherits it.
    berth.reload_inbound().await?;
    if let (Some(current), false) = (
        berth
            .store
            .running_release(app.id)
            .await
            .map_err(internal)?,
        app.stopped,
    ) {
        let scheduler = berth.scheduler().await?;
        // The app keeps its port: the old name's route lets go of it first. A canary's
        // containers carry the old name too: it ends here.
        berth.plane.remove(old_name.as_str()).await?;
        if berth
            .store
            .canary(app.id)
            .await
            .map_err(internal)?
            .is_some()
        {
            berth
                .store
                .end_canary(app.id, ReleaseStatus::Aborted)
                .await
                .map_err(internal)?;
            out.detail("its canary is aborted");
        }
        deploy_release(berth, &scheduler, &app, &current, actor, out).await?;
        stop_everywhere(berth, &scheduler, old_name.as_str(), true).await?;
        scheduler.remove_app_network(old_name.as_str()).await;
    }
    Ok(())
}

/// What `destroy` removed.
pub struct Destroyed {
    pub name: String,
    pub containers: usize,
    pub images: usize,
    /// Volumes left in place (`--keep-data`), and the ones removed.
    pub kept_volumes: Vec<String>,
    pub removed_volumes: Vec<String>,
}

/// Removes the app for good: its instances on every target, network, images, repo, releases
/// and (unless `keep_data`) its volumes. The caller has checked that no link holds it.
pub async fn destroy(
    berth: &Berth,
    app: LockedApp,
    keep_data: bool,
    actor: &str,
) -> Result<Destroyed, String> {
    let scheduler = berth.scheduler().await?;
    let volumes = crate::disk::volumes_of(berth, &scheduler, &app).await?;
    berth
        .store
        .move_app(app.id, AppState::Deleting, actor)
        .await;
    // A data plane that cannot be told now drops the route when the next control plane starts
    // (`Retain`, in `ops::settle_interrupted`): the destroy goes on.
    if let Err(error) = berth.plane.remove(&app.name).await {
        tracing::warn!(app = %app.name, %error, "route not removed yet");
    }
    berth.certs.remove(&app.name);
    if let Err(error) = berth.plane.reload_certs().await {
        tracing::warn!(app = %app.name, %error, "certificates not reloaded yet");
    }
    berth
        .plane
        .observe(Observed::Forget {
            app: app.name.to_string(),
        })
        .await;
    let containers = stop_everywhere(berth, &scheduler, &app.name, true).await?;
    scheduler.remove_app_network(&app.name).await;
    let images = scheduler.remove_images(&app.name).await;
    let name = app.name.clone();
    let repo = git::repo_path(&berth.config.repos_dir(), &name);
    if repo.exists() {
        std::fs::remove_dir_all(&repo).map_err(|e| format!("cannot remove the repo: {e}"))?;
    }
    // Recorded while the app exists: its events (this one too) are kept under its name.
    berth
        .store
        .note_event(
            Some(app.id),
            "app.destroyed",
            actor,
            "ok",
            &format!("{name}: {containers} containers, {images} images"),
        )
        .await;
    berth.store.delete_app(app.id).await.map_err(internal)?;
    berth.reload_domains().await?;
    // Inbound tokens follow the app's id: a renamed app keeps its hook under its new name, a
    // destroyed one's token stops working, and no later app of the old name inherits it.
    berth.reload_inbound().await?;
    let (mut kept_volumes, mut removed_volumes) = (Vec::new(), Vec::new());
    if keep_data {
        kept_volumes = volumes;
    } else {
        for volume in volumes {
            match scheduler.remove_volume(&volume).await {
                Ok(()) => removed_volumes.push(volume),
                Err(message) => tracing::warn!(%message, "volume left behind"),
            }
        }
    }
    Ok(Destroyed {
        name: name.to_string(),
        containers,
        images,
        kept_volumes,
        removed_volumes,
    })
}

/// A running app whose target setting changed from `previous` is deployed on its new target
/// now (its current release), then stopped where it ran. When that fails, the setting goes
/// back and the app keeps running where it was.
pub async fn move_target(
    berth: &Berth,
    app: &mut LockedApp,
    previous: Option<Target>,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    app.reload(berth).await?;
    let Some(current) = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?
        .filter(|_| !app.stopped)
    else {
        return Ok(());
    };
    let to: Target = target(berth, app);
    out.step(&format!("Moving {} v{} to {to}", app.name, current.number));
    let scheduler = berth.scheduler().await?;
    if let Err(message) = deploy_release(berth, &scheduler, app, &current, actor, out).await {
        berth
            .store
            .set_target(app.id, previous)
            .await
            .map_err(internal)?;
        berth.store.move_app(app.id, AppState::Running, actor).await;
        app.reload(berth).await?;
        return Err(format!(
            "{message}; {} stays on {}",
            app.name,
            target(berth, app)
        ));
    }
    Ok(())
}
