//! Deploy and rollback: number a release (image + config + formation), record it, and put it
//! into service through the scheduler; config changes are redeploys of the current image. Used by
//! pushes (`pipeline`), `config:set`, `releases:rollback`, `ps:start`, links and renames.

use std::collections::BTreeMap;

use super::canary::{deploy_canary, refuse_during_canary};
use super::lock::LockedApp;
use super::spec::{app_port, run_in, spec_for, usable_target};
use crate::deploy::{self, Scheduler};
use crate::domain::{AppState, ReleaseStatus};
use crate::manifest::Manifest;
use crate::output::Output;
use crate::server::Berth;
use crate::store::LogFailure;
use crate::store::{App, NewRelease, Release, ReleaseImage};

/// Where the new release's image comes from.
pub enum Source<'a> {
    /// A fresh build, tagged `build_tag`: retagged `<repo>:vN` and pushed to the registry.
    Build {
        build_tag: &'a str,
        image_repository: &'a str,
    },
    /// The image of an earlier release (config change, rollback).
    Existing(&'a str),
}

/// What a release is made of, besides its image.
pub struct Plan<'a> {
    pub commit: &'a str,
    pub config: &'a BTreeMap<String, String>,
    /// The release's manifest as JSON (Procfile, app.json), from its commit.
    pub manifest: &'a str,
    pub description: &'a str,
    pub actor: &'a str,
    /// Deploy it as the app's canary, beside the current release, with this weight (%).
    pub canary: Option<u8>,
}

/// Records a new release and deploys it. On failure the release is marked `failed`, the app
/// `failed`, and whatever ran before keeps running.
#[tracing::instrument(name = "release", skip_all, fields(app = %app.name, actor = %plan.actor))]
pub async fn create_and_deploy(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    source: Source<'_>,
    plan: Plan<'_>,
    out: &Output,
) -> Result<Release, String> {
    let store = &berth.store;
    let started = std::time::Instant::now();
    let image = match &source {
        Source::Build {
            image_repository, ..
        } => ReleaseImage::Repository(image_repository),
        Source::Existing(image) => ReleaseImage::Existing(image),
    };
    let config_json =
        serde_json::to_string(plan.config).map_err(|e| format!("internal error: {e}"))?;
    let mut release = store
        .create_release(NewRelease {
            app_id: app.id,
            commit_sha: plan.commit,
            image,
            config: &config_json,
            manifest: plan.manifest,
            created_by: plan.actor,
            description: plan.description,
        })
        .await
        .map_err(|e| format!("internal error recording the release: {e}"))?;
    let result = async {
        // Where it will run must be usable before anything runs (the release phase included).
        usable_target(berth, app).await?;
        if let Source::Build { build_tag, .. } = source {
            scheduler.retag(build_tag, &release.image).await?;
            if let Some(registry_address) = berth.config.registry.as_deref() {
                crate::crash::point("registry");
                out.step(&format!("Pushing image {}", release.image));
                let digest = scheduler
                    .push_image(&release.image, registry_address, out)
                    .await?;
                store
                    .set_release_digest(release.id, &digest)
                    .await
                    .map_err(|e| format!("internal error recording the digest: {e}"))?;
                release.digest = Some(digest);
            }
        }
        crate::crash::point("release");
        let manifest = Manifest::from_json(plan.manifest);
        let phases = manifest.processes.contains_key("release")
            || manifest.predeploy.is_some()
            || manifest.postdeploy.is_some();
        let phase_limit = std::time::Duration::from_secs(berth.config.phase_timeout);
        // One-off phase containers get the mounts, links and limits too (looked up only when
        // one runs).
        let within = if phases {
            run_in(berth, scheduler, app, &release).await?
        } else {
            deploy::RunIn::default()
        };
        let env: Vec<String> = plan
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // Heroku's release phase, then app.json's predeploy: in the new image with the new
        // config, before anything changes; either failing stops the deploy.
        for (what, command) in [
            (
                "release command (Procfile)",
                manifest.processes.get("release"),
            ),
            ("predeploy script (app.json)", manifest.predeploy.as_ref()),
        ] {
            if let Some(command) = command {
                run_phase(
                    scheduler,
                    app,
                    &release,
                    &env,
                    &within,
                    what,
                    command,
                    phase_limit,
                    out,
                )
                .await?;
            }
        }
        match plan.canary {
            Some(weight) => {
                out.step(&format!("Releasing v{} as a canary", release.number));
                deploy_canary(berth, scheduler, app, &release, weight, plan.actor, out).await?;
            }
            None => {
                out.step(&format!("Releasing v{}", release.number));
                deploy_only(berth, scheduler, app, &release, plan.actor, out).await?;
            }
        }
        if let Some(command) = &manifest.postdeploy
            && let Err(message) = run_phase(
                scheduler,
                app,
                &release,
                &env,
                &within,
                "postdeploy script (app.json)",
                command,
                phase_limit,
                out,
            )
            .await
        {
            out.error(&format!(
                "{message}; v{} is live all the same",
                release.number
            ));
        }
        Ok(())
    }
    .await;
    berth
        .plane
        .observe(crate::dataplane::wire::Observed::Deploy {
            app: app.name.to_string(),
            ok: result.is_ok(),
            secs: started.elapsed().as_secs_f64(),
        })
        .await;
    match result {
        Ok(()) => {
            // Retention: images older than the last keep_releases releases go (the caller holds
            // the app's lock; the engine keeps any image a draining container still uses).
            let removed = crate::disk::prune_app(berth, scheduler, app, false).await;
            let images = removed.iter().filter(|r| r.kind == "image").count();
            if images > 0 {
                out.detail(&format!(
                    "removed {images} old image(s) (keep_releases = {})",
                    berth.config.keep_releases
                ));
            }
            Ok(release)
        }
        Err(message) => {
            store.move_release(release.id, ReleaseStatus::Failed).await;
            Err(message)
        }
    }
}

/// Runs one phase command of a release in a one-off container; fails unless it exits 0.
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    scheduler: &Scheduler,
    app: &App,
    release: &Release,
    env: &[String],
    within: &deploy::RunIn,
    what: &str,
    command: &str,
    limit: std::time::Duration,
    out: &Output,
) -> Result<(), String> {
    out.step(&format!("Running the {what}: {command}"));
    let code = scheduler
        .run_to_end(
            &app.name,
            &release.image,
            env.to_vec(),
            crate::manifest::command_vector(command),
            within.clone(),
            limit,
            out,
        )
        .await
        .map_err(|message| {
            format!(
                "the {what} failed: {message}; v{} was not deployed",
                release.number
            )
        })?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!(
            "the {what} failed (exit code {code}): v{} was not deployed",
            release.number
        ))
    }
}

pub(super) async fn deploy_only(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    release: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let target = usable_target(berth, app).await?;
    store
        .move_release(release.id, ReleaseStatus::Deploying)
        .await;
    store.move_app(app.id, AppState::Deploying, actor).await;
    out.step(&format!("Deploying to {target}"));
    let spec = spec_for(berth, scheduler, app, release).await?;
    let port = app_port(berth, app).await?;
    let instances = scheduler
        .deploy(target, &spec, out, &berth.app_port(&app.name, port))
        .await?;
    berth
        .plane
        .set_health(&app.name, spec.health.clone())
        .await?;
    // An app moved to another target stops on the one it left (nothing to do when it did not).
    for (other, stopped) in scheduler.stop_elsewhere(target, &app.name).await {
        match stopped {
            Ok(0) => {}
            Ok(stopped) => out.detail(&format!("stopped {stopped} instance(s) on {other}")),
            Err(message) => out.detail(&format!("could not stop it on {other}: {message}")),
        }
    }
    let first_port = instances
        .iter()
        .find_map(|i| i.address)
        .map_or(0, |a| a.port());
    store
        .mark_release_running(release, first_port)
        .await
        .map_err(|e| format!("internal error recording the release: {e}"))?;
    store
        .set_stopped(app.id, false)
        .await
        .or_log("marking the app started");
    store.move_app(app.id, AppState::Running, actor).await;
    if instances.is_empty() {
        let detail = format!("v{} with no web instances", release.number);
        store
            .note_event(Some(app.id), "deploy", actor, "succeeded", &detail)
            .await;
        out.step(&format!(
            "{} v{} is released with no web instances (ps:scale {} web=1 runs it)",
            app.name, release.number, app.name
        ));
        return Ok(());
    }
    let url = berth.app_url(&app.name, port);
    if berth.config.http_listen().is_some() {
        out.detail(&format!("also at {} (the app's own port)", berth.url(port)));
    }
    store
        .note_event(
            Some(app.id),
            "deploy",
            actor,
            "succeeded",
            &format!("v{} at {url}", release.number),
        )
        .await;
    out.step(&format!("{} is live at {url}", app.name));
    Ok(())
}

/// Stops the app on every target berth applies (whichever it runs on); gives the instances
/// stopped. With `forget`, the targets also drop the files they keep for it (`apps:destroy`).
pub async fn stop_everywhere(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &str,
    forget: bool,
) -> Result<usize, String> {
    scheduler
        .stop_everywhere(app, forget, &berth.config.deploy_dir())
        .await
}

/// A change of an app's config: what it was, what it becomes, and the event's description.
pub struct ConfigChange<'a> {
    pub old: &'a BTreeMap<String, String>,
    pub new: &'a BTreeMap<String, String>,
    pub description: &'a str,
}

/// Stores `new` as the app's config and, when it runs, deploys it as a new release of the current
/// image (true; false when nothing runs to redeploy); on failure the old config is put back and
/// the running release keeps serving. The apps linked to this one are the caller's to refresh
/// (`refresh_dependents`).
pub async fn redeploy_with_config(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &LockedApp,
    change: ConfigChange<'_>,
    actor: &str,
    out: &Output,
) -> Result<bool, String> {
    let ConfigChange {
        old,
        new,
        description,
    } = change;
    let store = &berth.store;
    let internal = |e: sqlx::Error| format!("internal error: {e}");
    store.replace_config(app.id, new).await.map_err(internal)?;
    let current = store.running_release(app.id).await.map_err(internal)?;
    let Some(current) = current.filter(|_| !app.stopped) else {
        store
            .note_event(Some(app.id), "config", actor, "ok", description)
            .await;
        return Ok(false);
    };
    if let Err(message) = refuse_during_canary(berth, app).await {
        store
            .replace_config(app.id, old)
            .await
            .or_log("putting the old config back");
        return Err(message);
    }
    out.step(&format!("Redeploying {} ({description})", app.name));
    let plan = Plan {
        commit: &current.commit_sha,
        config: new,
        manifest: &current.manifest,
        description,
        actor,
        canary: None,
    };
    match create_and_deploy(
        berth,
        scheduler,
        app,
        Source::Existing(&current.image),
        plan,
        out,
    )
    .await
    {
        Ok(_) => {
            store
                .note_event(Some(app.id), "config", actor, "ok", description)
                .await;
            Ok(true)
        }
        Err(message) => {
            store
                .replace_config(app.id, old)
                .await
                .or_log("putting the old config back");
            store.move_app(app.id, AppState::Running, actor).await;
            store
                .note_event(Some(app.id), "config", actor, "failed", description)
                .await;
            Err(format!(
                "{message}; the config is unchanged and v{} keeps running",
                current.number
            ))
        }
    }
}

/// A build of the app starts (a push, `ps:rebuild`, a sync): it is `building`.
pub async fn build_started(berth: &Berth, app: &LockedApp, actor: &str) {
    berth
        .store
        .move_app(app.id, AppState::Building, actor)
        .await;
}

/// A build or deploy of a commit failed: the app is `failed` and the event says why (webhooks
/// send it as `deploy.failed`).
pub async fn build_failed(berth: &Berth, app: &LockedApp, actor: &str, message: &str) {
    berth.store.move_app(app.id, AppState::Failed, actor).await;
    berth
        .store
        .note_event(Some(app.id), "deploy", actor, "failed", message)
        .await;
}
