//! The release stage: number a release (image + config + formation), record it, and hand it to
//! the deploy target. Used by pushes, `config:set`, `releases:rollback` and `ps:start`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::deploy::render::{self, Resources, Target};
use crate::deploy::{self, DeploySpec, Scheduler};
use crate::domain::{AppState, ReleaseStatus};
use crate::manifest::Manifest;
use crate::output::Output;
use crate::server::Berth;
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

/// `create_and_deploy`, then (unless it is a canary) the apps linked to this one follow
/// (`refresh_dependents`). What commands and pushes call; the refresh's own redeploys call
/// `create_and_deploy`, so a deploy never recurses into the links.
pub async fn create_deploy_and_follow(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
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

/// Records a new release and deploys it. On failure the release is marked `failed`, the app
/// `failed`, and whatever ran before keeps running.
pub async fn create_and_deploy(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
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
        .metrics
        .deploy(&app.name, result.is_ok(), started.elapsed());
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

/// Puts an already recorded release into service with the app's formation and marks it running.
/// Deploys an existing release, then brings the apps linked to this one up to date.
pub async fn deploy_release(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    release: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    deploy_only(berth, scheduler, app, release, actor, out).await?;
    // Apps linked to this one follow it when its address changed (a new port, a new name).
    refresh_dependents(berth, scheduler, app, actor, out).await;
    Ok(())
}

async fn deploy_only(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
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
    berth.routes.set_health(&app.name, spec.health.clone());
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
    let _ = store.set_stopped(app.id, false).await;
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
    match target(berth, app)? {
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
    app: &App,
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
        .routes
        .point_canary(&app.name, Some((&addresses, weight)));
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
    app: &App,
    canary: &Release,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    let old = store.running_release(app.id).await.ok().flatten();
    let port = app_port(berth, app).await?;
    let Some(canary_addresses) = berth.routes.promote_canary(&app.name) else {
        return Err(format!(
            "v{} is not serving (its containers are gone): canary:abort {}",
            canary.number, app.name
        ));
    };
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
    app: &App,
    number: Option<i64>,
    actor: &str,
) -> Result<(), String> {
    let store = &berth.store;
    berth.routes.point_canary(&app.name, None);
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

/// The deploy spec of a release: its image and config, the app's formation, the server's settings.
pub async fn spec_for(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    release: &Release,
) -> Result<DeploySpec, String> {
    let config: BTreeMap<String, String> =
        serde_json::from_str(&release.config).unwrap_or_default();
    // Targets that apply files get the release's units, rendered with the app's overrides; a
    // template that fails stops the deploy here, before anything is applied.
    let target = target(berth, app)?;
    let units = if target == Target::Docker {
        Vec::new()
    } else {
        let context = render_context(berth, app, release).await?;
        let overrides = template_overrides(berth, app, release, target).await?;
        crate::deploy::sandbox::render(target, &context, overrides).await?
    };
    let manifest = manifest(release);
    let formation = formation(app);
    let all_resources = resources(app);
    let binds = binds(&mounts(berth, Some(scheduler), app).await?);
    let links = active_links(berth, app).await?;
    // The image is read (its port) before anything starts: pulled back first if it is gone
    // from this engine, by its digest.
    scheduler
        .ensure_image(
            &release.image,
            release.digest.as_deref(),
            &Output::discard(),
        )
        .await?;
    Ok(DeploySpec {
        binds,
        links,
        web_command: manifest
            .processes
            .get("web")
            .map(|c| crate::manifest::command_vector(c))
            .unwrap_or_default(),
        others: manifest
            .scalable()
            .map(|(name, command)| deploy::ProcessSpec {
                name: name.clone(),
                command: crate::manifest::command_vector(command),
                count: formation.get(name).copied().unwrap_or(0),
                resources: all_resources.get(name).cloned().unwrap_or_default(),
            })
            .collect(),
        health: manifest.healthcheck.clone(),
        units,
        work_dir: berth.config.deploy_dir(),
        app: app.name.clone(),
        release: release.number,
        image: release.image.clone(),
        digest: release.digest.clone(),
        port: scheduler.web_port(&release.image).await?,
        env: config.into_iter().collect(),
        web: formation.get("web").copied().unwrap_or(1),
        resources: all_resources.get("web").cloned().unwrap_or_default(),
        publish_address: berth.config.publish_address,
        ready_timeout: berth.config.ready_timeout(),
    })
}

/// The app's mounts (`storage:mount`). With an engine, named volumes missing there are made
/// (every target mounts them by name; a restored server gets empty ones).
pub async fn mounts(
    berth: &Berth,
    scheduler: Option<&Scheduler>,
    app: &App,
) -> Result<Vec<render::Volume>, String> {
    let mounts = berth
        .store
        .mounts(app.id)
        .await
        .map_err(|e| format!("internal error reading the app's mounts: {e}"))?;
    let mut volumes = Vec::new();
    for mount in mounts {
        let host = mount.kind == "host";
        // The engine resolves a host directory at each start: one swapped for a symlink since
        // it was mounted would reach somewhere nobody checked (finding 24).
        if host {
            let real = std::fs::canonicalize(&mount.source).ok();
            if real.as_deref() != Some(std::path::Path::new(&mount.source)) {
                return Err(format!(
                    "the host directory {} is no longer a directory of its own (moved or a symlink now): storage:unmount {} {} and mount it again",
                    mount.source, app.name, mount.path
                ));
            }
        }
        if let (Some(scheduler), false) = (scheduler, host) {
            scheduler
                .ensure_volume(&mount.source, &app.name, &app.uid)
                .await?;
        }
        volumes.push(render::Volume {
            name: mount.name,
            source: mount.source,
            path: mount.path,
            host,
        });
    }
    Ok(volumes)
}

/// Where the app's one-off containers (`run`, the release phase) run: its mounts, the apps
/// it is linked to, the limits of its web process.
pub async fn run_in(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    release: &Release,
) -> Result<deploy::RunIn, String> {
    Ok(deploy::RunIn {
        digest: release.digest.clone(),
        binds: binds(&mounts(berth, Some(scheduler), app).await?),
        links: active_links(berth, app).await?,
        resources: resources(app).get("web").cloned().unwrap_or_default(),
    })
}

/// The apps `app` is linked to whose link still stands: the key that made it may still operate
/// the dependency (finding 9). A link of an ex-grantee or a removed key no longer joins its
/// app to the dependency's network, nor keeps the dependency from being destroyed.
pub async fn active_links(berth: &Berth, app: &App) -> Result<Vec<String>, String> {
    let mut active = Vec::new();
    for link in berth
        .store
        .links_from(app.id)
        .await
        .map_err(|e| format!("internal error reading links: {e}"))?
    {
        if link_stands(berth, &link).await {
            active.push(link.dep);
        }
    }
    Ok(active)
}

/// Whether the key that made `link` may still operate its dependency.
pub async fn link_stands(berth: &Berth, link: &crate::store::Link) -> bool {
    let Ok(name) = crate::names::AppName::parse(&link.dep) else {
        return false;
    };
    match berth.store.app(&name).await {
        Ok(Some(dep)) => crate::commands::key_may_operate(berth, &link.created_by, &dep).await,
        _ => false,
    }
}

/// Mounts as the engine takes them: `source:path`.
pub fn binds(volumes: &[render::Volume]) -> Vec<String> {
    volumes
        .iter()
        .map(|v| format!("{}:{}", v.source, v.path))
        .collect()
}

/// The app's stable public port, given on its first deploy.
pub async fn app_port(berth: &Berth, app: &App) -> Result<u16, String> {
    if let Some(port) = app.port.and_then(|p| u16::try_from(p).ok()) {
        return Ok(port);
    }
    let port = berth.routes.free_port()?;
    berth
        .store
        .set_port(app.id, port)
        .await
        .map_err(|e| format!("internal error recording the app's port: {e}"))?;
    Ok(port)
}

/// The app's target, once it is known to apply here.
pub async fn usable_target(berth: &Berth, app: &App) -> Result<Target, String> {
    let target = target(berth, app)?;
    deploy::applicable(target).await?;
    Ok(target)
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

/// The app's resources: process type → CPU and memory.
pub fn resources(app: &App) -> BTreeMap<String, Resources> {
    serde_json::from_str(&app.resources).unwrap_or_default()
}

/// The app's target: its own, else the server's default.
pub fn target(berth: &Berth, app: &App) -> Result<Target, String> {
    Target::parse(
        app.target
            .as_deref()
            .unwrap_or(&berth.config.default_target),
    )
}

/// What the templates of every target see for this release of the app.
pub async fn render_context(
    berth: &Berth,
    app: &App,
    release: &Release,
) -> Result<render::Context, String> {
    let config: BTreeMap<String, String> =
        serde_json::from_str(&release.config).unwrap_or_default();
    // The web port comes from the image when the engine answers; else the default.
    let port = match Scheduler::connect_within(std::time::Duration::from_secs(1)).await {
        Ok(scheduler) => scheduler
            .web_port(&release.image)
            .await
            .unwrap_or(deploy::DEFAULT_PORT),
        Err(_) => deploy::DEFAULT_PORT,
    };
    let resources = resources(app);
    let manifest = manifest(release);
    let commands = &manifest.processes;
    let scalable: Vec<&String> = manifest.scalable().map(|(name, _)| name).collect();
    let processes = formation(app)
        .iter()
        // Besides web, only the process types the release's Procfile defines (never `release`).
        .filter(|(name, _)| name.as_str() == "web" || scalable.contains(name))
        .map(|(name, replicas)| {
            let port = (name == "web").then_some(port);
            render::Process::new(
                name,
                commands
                    .get(name)
                    .map(|c| crate::manifest::command_vector(c))
                    .unwrap_or_default(),
                *replicas,
                port,
                &resources.get(name).cloned().unwrap_or_default(),
            )
        })
        .collect();
    Ok(render::Context {
        app: app.name.clone(),
        release: release.number,
        // Units that pull the image pull it by its digest once it has one (`repo:vN@sha256:…`).
        image: match &release.digest {
            Some(digest) => format!("{}@{digest}", release.image),
            None => release.image.clone(),
        },
        registry: berth.config.registry.is_some(),
        env: config,
        labels: serde_json::from_str(&app.labels).unwrap_or_default(),
        processes,
        domains: vec![format!("{}.{}", app.name, berth.config.public_host)],
        volumes: mounts(berth, None, app).await?,
        publish_address: berth.config.publish_address.to_string(),
        app_port: app.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
    })
}

/// The `.berth/templates/` tree of the app's repo at `commit`: its id and whether an admin
/// approved it (`templates:approve`). `None` when the commit has none.
pub async fn repo_templates(
    berth: &Berth,
    app: &App,
    commit: &str,
) -> Result<Option<(String, bool)>, String> {
    let name = crate::names::AppName::parse(&app.name)?;
    let repo = crate::git::repo_path(&berth.config.repos_dir(), &name);
    let commit = commit.to_string();
    let tree = tokio::task::spawn_blocking(move || {
        crate::git::tree_id(&repo, None, &commit, ".berth/templates")
    })
    .await
    .map_err(|e| e.to_string())?
    .unwrap_or_default();
    let Some(tree) = tree else {
        return Ok(None);
    };
    let approved = berth
        .store
        .templates_approved(app.id, &tree)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some((tree, approved)))
}

/// Template overrides for the target: the app's repo (`.berth/templates/<target>/` at the
/// release's commit, only when an admin approved that tree: a member's templates could ask for
/// host mounts or privileges), then the server's `template_dir`.
pub async fn template_overrides(
    berth: &Berth,
    app: &App,
    release: &Release,
    target: Target,
) -> Result<render::Overrides, String> {
    let mut overrides = render::Overrides::default();
    let text_files = |files: Vec<(String, Vec<u8>)>| -> BTreeMap<String, String> {
        files
            .into_iter()
            .filter_map(|(n, bytes)| Some((n, String::from_utf8(bytes).ok()?)))
            .collect()
    };
    if let Some((_, true)) = repo_templates(berth, app, &release.commit_sha).await? {
        let name = crate::names::AppName::parse(&app.name)?;
        let repo = crate::git::repo_path(&berth.config.repos_dir(), &name);
        let (commit, dir) = (
            release.commit_sha.clone(),
            format!(".berth/templates/{target}"),
        );
        let from_repo =
            tokio::task::spawn_blocking(move || crate::git::read_dir_files(&repo, &commit, &dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("templates refused: {}", e.message()))?;
        overrides
            .sources
            .push(("app repo".to_string(), text_files(from_repo)));
    }
    if let Some(dir) = &berth.config.template_dir {
        let dir = dir.join(target.name());
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if let (Some(name), Ok(bytes)) = (
                    entry.file_name().to_str().map(String::from),
                    std::fs::read(entry.path()),
                ) {
                    files.push((name, bytes));
                }
            }
        }
        overrides
            .sources
            .push((format!("{}", dir.display()), text_files(files)));
    }
    Ok(overrides)
}

/// What the release runs (its Procfile and app.json).
pub fn manifest(release: &Release) -> Manifest {
    Manifest::from_json(&release.manifest)
}

/// The app's formation: process type → instances.
pub fn formation(app: &App) -> BTreeMap<String, u32> {
    serde_json::from_str(&app.formation)
        .unwrap_or_else(|_| BTreeMap::from([("web".to_string(), 1)]))
}

/// The variables a link gives: `ALIAS_HOST` (DEP's name, which its web instances answer to on
/// the berth network), `ALIAS_PORT` (the port its web process listens on) and `ALIAS_URL`.
pub async fn link_values(
    berth: &Berth,
    scheduler: &Scheduler,
    dep: &App,
    alias: &str,
) -> Result<BTreeMap<String, String>, String> {
    let release = berth
        .store
        .running_release(dep.id)
        .await
        .map_err(|e| format!("internal error reading {}: {e}", dep.name))?
        .ok_or_else(|| {
            format!(
                "{} has no release running: push it first, then link to it",
                dep.name
            )
        })?;
    let port = scheduler.web_port(&release.image).await?;
    Ok(BTreeMap::from([
        (format!("{alias}_HOST"), dep.name.clone()),
        (format!("{alias}_PORT"), port.to_string()),
        (
            format!("{alias}_URL"),
            format!("http://{}:{port}", dep.name),
        ),
    ]))
}

/// The names of the variables a link with this alias sets.
pub fn link_keys(alias: &str) -> [String; 3] {
    ["HOST", "PORT", "URL"].map(|k| format!("{alias}_{k}"))
}

/// After `dep` was deployed (or renamed): every app linked to it whose link variables no longer
/// match gets them as a new release (a config change, redeployed), and so on along the links:
/// a plain loop over a work list (each redeployed app's own dependents are looked at next), not
/// a recursion through the deploy. Runs for each dependent under its own lock, taken after the
/// previous one is released; link cycles are refused when made, and an app is redeployed at
/// most once per refresh.
pub async fn refresh_dependents(
    berth: &Berth,
    scheduler: &Scheduler,
    dep: &App,
    actor: &str,
    out: &Output,
) {
    let mut work = std::collections::VecDeque::from([dep.clone()]);
    let mut redeployed = std::collections::HashSet::from([dep.id]);
    while let Some(dep) = work.pop_front() {
        let Ok(links) = berth.store.links_to(dep.id).await else {
            continue;
        };
        for link in links {
            let Ok(name) = crate::names::AppName::parse(&link.app) else {
                continue;
            };
            let Ok(Some(app)) = berth.store.app(&name).await else {
                continue;
            };
            if redeployed.contains(&app.id) {
                continue;
            }
            let Ok((_guard, app)) = berth.lock(&app).await else {
                continue;
            };
            match relink(berth, scheduler, &app, &dep, &link.alias, actor, out).await {
                Ok(true) => {
                    redeployed.insert(app.id);
                    work.push_back(app);
                }
                Ok(false) => {}
                Err(message) => out.error(&format!(
                    "{} keeps its old {}_* values: {message}",
                    app.name, link.alias
                )),
            }
        }
    }
}

/// Puts the current link values of `dep` into `app`'s config; redeploys `app` when they changed
/// (true). The apps linked to `app` are the caller's to refresh.
pub async fn relink(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    dep: &App,
    alias: &str,
    actor: &str,
    out: &Output,
) -> Result<bool, String> {
    let store = &berth.store;
    let internal = |e: sqlx::Error| format!("internal error: {e}");
    let values = link_values(berth, scheduler, dep, alias).await?;
    let old = store.config(app.id).await.map_err(internal)?;
    let mut new = old.clone();
    new.extend(values);
    if new == old {
        return Ok(false);
    }
    let description = format!("link {alias} -> {}", dep.name);
    let change = ConfigChange {
        old: &old,
        new: &new,
        description: &description,
    };
    redeploy_with_config(berth, scheduler, app, change, actor, out).await
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
    app: &App,
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
        let _ = store.replace_config(app.id, old).await;
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
            let _ = store.replace_config(app.id, old).await;
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
