//! The deploy spec: what a release runs as the scheduler takes it (image, config, formation,
//! resources, mounts, links, rendered units), the app's target and stable port, and what the
//! templates see. Reads only: nothing here changes an app.

use std::collections::BTreeMap;

use crate::deploy::render::{self, Resources, Target};
use crate::deploy::{self, DeploySpec, Scheduler};
use crate::domain::MountKind;
use crate::manifest::Manifest;
use crate::output::Output;
use crate::server::Berth;
use crate::store::{App, Release};

/// The deploy spec of a release: its image and config, the app's formation, the server's settings.
pub async fn spec_for(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    release: &Release,
) -> Result<DeploySpec, String> {
    let config: BTreeMap<String, String> = release.config.0.clone();
    // Targets that apply files get the release's units, rendered with the app's overrides; a
    // template that fails stops the deploy here, before anything is applied.
    let target = target(berth, app);
    let manifest = manifest(release);
    let formation = formation(app);
    let mut host_ports = Vec::new();
    let units = if target == Target::Docker {
        Vec::new()
    } else {
        let mut context = render_context(berth, app, release).await?;
        if target == Target::Systemd {
            // Each web instance's unit publishes on a host port berth picks, as the docker
            // target's containers do; one spare instance beyond the formation is rendered for
            // a restart's surge (`deploy::systemd`).
            let web = context.processes.iter_mut().find(|p| p.name == "web");
            if let Some(web) = web {
                web.replicas += 1;
                host_ports = free_ports(berth.config.publish_address, web.replicas as usize)?;
            }
            context.host_ports = host_ports.clone();
        }
        let overrides = template_overrides(berth, app, release, target).await?;
        crate::deploy::sandbox::render(target, &context, overrides).await?
    };
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
        host_ports,
        work_dir: berth.config.deploy_dir(),
        app: app.name.to_string(),
        release: release.number,
        image: release.image.clone(),
        digest: release.digest.clone(),
        port: scheduler.web_port(&release.image).await?,
        env: config.into_iter().collect(),
        web: formation.get("web").copied().unwrap_or(1),
        resources: all_resources.get("web").cloned().unwrap_or_default(),
        publish_address: berth.config.publish_address,
        ready_timeout: berth.config.ready_timeout(),
        pull_registry: berth
            .config
            .cluster_registry
            .clone()
            .or_else(|| berth.config.registry.clone()),
    })
}

/// `count` distinct ports nothing listens on at `address` now.
fn free_ports(address: std::net::IpAddr, count: usize) -> Result<Vec<u16>, String> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    let mut tries = 0;
    while ports.len() < count {
        tries += 1;
        let port = crate::route::free_port(address)?;
        if !ports.contains(&port) {
            ports.push(port);
        } else if tries > count * 10 {
            return Err("cannot find free host ports for the app's instances".to_string());
        }
    }
    Ok(ports)
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
        let host = mount.kind == MountKind::Host;
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
    let port = berth.plane.reserve_port().await?;
    berth
        .store
        .set_port(app.id, port)
        .await
        .map_err(|e| format!("internal error recording the app's port: {e}"))?;
    Ok(port)
}

/// The app's target, once it is known to apply here.
pub async fn usable_target(berth: &Berth, app: &App) -> Result<Target, String> {
    let target = target(berth, app);
    deploy::applicable(target).await?;
    Ok(target)
}

/// The app's resources: process type → CPU and memory.
pub fn resources(app: &App) -> BTreeMap<String, Resources> {
    app.resources.0.clone()
}

/// The app's target: its own, else the server's default.
pub fn target(berth: &Berth, app: &App) -> Target {
    app.target.unwrap_or(berth.config.default_target)
}

/// What the templates of every target see for this release of the app.
pub async fn render_context(
    berth: &Berth,
    app: &App,
    release: &Release,
) -> Result<render::Context, String> {
    let config: BTreeMap<String, String> = release.config.0.clone();
    // The web port comes from the image when the engine answers; else the default.
    let port = match berth
        .scheduler_within(std::time::Duration::from_secs(1))
        .await
    {
        Ok(scheduler) => scheduler
            .web_port(&release.image)
            .await
            .unwrap_or(deploy::DEFAULT_PORT),
        Err(_) => deploy::DEFAULT_PORT,
    };
    let resources = resources(app);
    let manifest = manifest(release);
    let volumes = mounts(berth, None, app).await?;
    let placement = placement(berth, app, !volumes.is_empty()).await;
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
        app: app.name.to_string(),
        release: release.number,
        image: pulled_image(
            &release.image,
            release.digest.as_deref(),
            berth.config.registry.as_deref(),
            berth.config.cluster_registry.as_deref(),
        ),
        registry: berth.config.registry.is_some(),
        env: config,
        labels: app.labels.0.clone(),
        processes,
        domains: vec![format!("{}.{}", app.name, berth.config.public_host)],
        volumes,
        publish_address: berth.config.publish_address.to_string(),
        app_port: app.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        host_ports: Vec::new(),
        placement,
    })
}

/// Where the app's swarm tasks may run: its own constraints (`apps:set APP placement=…`), and,
/// when it mounts volumes, the node that holds them (this engine's: volumes are local to a
/// node, so its tasks are never split from their data).
pub async fn placement(berth: &Berth, app: &App, has_volumes: bool) -> Vec<String> {
    let mut placement = app.placement.0.clone();
    if has_volumes
        && let Ok(scheduler) = berth
            .scheduler_within(std::time::Duration::from_secs(1))
            .await
        && let Some(node) = scheduler.local_node().await
    {
        placement.push(format!("node.id=={node}"));
    }
    placement
}

/// Checks one placement constraint as `apps:set APP placement=…` takes it:
/// `node.(id|hostname|role|platform.os|platform.arch|labels.KEY)(==|!=)VALUE`.
pub fn check_constraint(constraint: &str) -> Result<(), String> {
    let usage = || {
        format!(
            "placement {constraint:?} is not node.labels.KEY==VALUE (or node.hostname, node.id, node.role, node.platform.os, node.platform.arch; == or !=)"
        )
    };
    let (field, value) = constraint
        .split_once("==")
        .or_else(|| constraint.split_once("!="))
        .ok_or_else(usage)?;
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 128
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
    };
    let known = matches!(
        field,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || field.strip_prefix("node.labels.").is_some_and(word);
    if !known || !word(value) {
        return Err(usage());
    }
    Ok(())
}

/// The release's image as the swarm's nodes pull it (`run:task`).
pub fn node_image(berth: &Berth, release: &Release) -> String {
    pulled_image(
        &release.image,
        release.digest.as_deref(),
        berth.config.registry.as_deref(),
        berth.config.cluster_registry.as_deref(),
    )
}

/// The release's image as units name it: by its digest once it has one (`repo:vN@sha256:…`),
/// and at the registry's `cluster_registry` address when there is one (what every node of a
/// swarm reaches; the engine berth builds on pushed it through `registry`, the same store).
fn pulled_image(
    image: &str,
    digest: Option<&str>,
    registry: Option<&str>,
    cluster_registry: Option<&str>,
) -> String {
    let image = match (registry, cluster_registry) {
        (Some(registry), Some(cluster)) => match image.strip_prefix(&format!("{registry}/")) {
            Some(rest) => format!("{cluster}/{rest}"),
            None => image.to_string(),
        },
        _ => image.to_string(),
    };
    match digest {
        Some(digest) => format!("{image}@{digest}"),
        None => image,
    }
}

/// The `.berth/templates/` tree of the app's repo at `commit`: its id and whether an admin
/// approved it (`templates:approve`). `None` when the commit has none.
pub async fn repo_templates(
    berth: &Berth,
    app: &App,
    commit: &str,
) -> Result<Option<(String, bool)>, String> {
    let name = app.name.clone();
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
        let name = app.name.clone();
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
    app.formation.0.clone()
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
        Ok(Some(dep)) => crate::access::key_may_operate(berth, &link.created_by, &dep).await,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::pulled_image;

    #[test]
    fn nodes_pull_the_release_by_digest_at_the_cluster_registry() {
        let image = "127.0.0.1:5055/shop:v3";
        let digest = Some("sha256:ab");
        assert_eq!(
            pulled_image(image, digest, Some("127.0.0.1:5055"), Some("10.0.0.2:5055")),
            "10.0.0.2:5055/shop:v3@sha256:ab"
        );
        assert_eq!(
            pulled_image(image, digest, Some("127.0.0.1:5055"), None),
            "127.0.0.1:5055/shop:v3@sha256:ab"
        );
        // Local-only images (no registry) stay as they are.
        assert_eq!(
            pulled_image("berth/shop:v3", None, None, Some("10.0.0.2:5055")),
            "berth/shop:v3"
        );
    }
}

#[cfg(test)]
mod placement_tests {
    use super::check_constraint;

    #[test]
    fn placement_constraints_are_the_swarms_node_fields_only() {
        for good in [
            "node.labels.zone==eu",
            "node.hostname!=db-1",
            "node.role==worker",
            "node.platform.arch==x86_64",
        ] {
            assert!(check_constraint(good).is_ok(), "{good}");
        }
        for bad in [
            "node.labels.zone",
            "engine.labels.x==y",
            "node.labels.zone==eu\n- node.role==manager",
            "node.labels.zone==\"eu\"",
            "node.labels.==x",
            "node.hostname==",
        ] {
            assert!(check_constraint(bad).is_err(), "{bad:?}");
        }
    }
}
