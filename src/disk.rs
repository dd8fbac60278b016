//! Disk: what berth keeps on this host per app (`system:df`), and retention (`system:prune`,
//! after every deploy, and hourly): the images of the last `keep_releases` releases stay (so a
//! rollback never rebuilds); older release images, images left by failed builds, stopped
//! one-off containers and the temporary objects of aborted pushes go.
//!
//! **Architecture Invariant:** nothing in use is removed: images of the running release, of
//! the canary, of any container (running or stopped), and of the retained releases stay; the
//! engine itself refuses to remove an image a container uses (no force).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::deploy::Scheduler;
use crate::server::Berth;
use crate::store::App;

/// Pushes older than this whose objects are still in a quarantine directory were aborted.
const ABORTED_PUSH_AGE: Duration = Duration::from_secs(600);

/// What an app uses on disk, in bytes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Usage {
    pub app: String,
    /// Local images of the app (release and build tags); `size` counts layers shared with other
    /// images (base images) too, like `docker image ls`.
    pub images: usize,
    pub images_bytes: u64,
    pub volumes: usize,
    pub volumes_bytes: u64,
    pub repo_bytes: u64,
    /// The app's containers' logs (the engine's json-file logs).
    pub logs_bytes: u64,
}

/// One thing retention removes (or would remove, on a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub app: String,
    /// `image`, `container` or `push-temp`.
    pub kind: &'static str,
    pub name: String,
    pub bytes: u64,
}

/// Size of a file or of everything under a directory (symlinks not followed).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn repo_dir(berth: &Berth, app: &str) -> Option<std::path::PathBuf> {
    let name = crate::names::AppName::parse(app).ok()?;
    Some(crate::git::repo_path(&berth.config.repos_dir(), &name))
}

/// The engine names of the app's volumes: those it mounts, and those it mounted before
/// (labeled with its uid), except what another app mounts.
pub async fn volumes_of(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
) -> Result<Vec<String>, String> {
    let internal = |e: sqlx::Error| format!("internal error reading mounts: {e}");
    let mut volumes: Vec<String> = berth
        .store
        .mounts(app.id)
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|m| m.kind == crate::domain::MountKind::Volume)
        .map(|m| m.source)
        .collect();
    let others = berth
        .store
        .volumes_of_other_apps(app.id)
        .await
        .map_err(internal)?;
    for labeled in scheduler.labeled_volumes(&app.uid).await {
        if !volumes.contains(&labeled) && !others.contains(&labeled) {
            volumes.push(labeled);
        }
    }
    Ok(volumes)
}

/// What the app uses on disk now.
pub async fn usage(berth: &Berth, scheduler: &Scheduler, app: &App) -> Usage {
    let images = scheduler.app_images(&app.name).await;
    let volumes = volumes_of(berth, scheduler, app).await.unwrap_or_default();
    let mut volumes_bytes = 0;
    for volume in &volumes {
        if let Some(dir) = scheduler.volume_dir(volume).await {
            volumes_bytes += dir_size(&dir);
        }
    }
    let mut logs_bytes = 0;
    for container in scheduler.app_containers(&app.name).await {
        if let Some(path) = scheduler.log_file(&container.id).await {
            logs_bytes += dir_size(&path);
        }
    }
    Usage {
        app: app.name.to_string(),
        images: images.len(),
        images_bytes: images.iter().map(|i| i.size).sum(),
        volumes: volumes.len(),
        volumes_bytes,
        repo_bytes: repo_dir(berth, &app.name).map_or(0, |p| dir_size(&p)),
        logs_bytes,
    }
}

/// Removes (or, with `dry_run`, lists) what the app no longer needs. The caller holds the app's
/// lock, so no build or deploy of it runs meanwhile.
pub async fn prune_app(
    berth: &Berth,
    scheduler: &Scheduler,
    app: &App,
    dry_run: bool,
) -> Vec<Removal> {
    let mut removed = Vec::new();
    let containers = scheduler.app_containers(&app.name).await;
    // Stopped one-off containers (`run`, release phase) left by a lost connection.
    for container in &containers {
        let one_off = container.process.as_deref() == Some("run");
        if !one_off || container.active {
            continue;
        }
        if !dry_run && !scheduler.remove_stopped_container(&container.id).await {
            continue;
        }
        removed.push(Removal {
            app: app.name.to_string(),
            kind: "container",
            name: container.name.clone(),
            bytes: 0,
        });
    }
    // Images: keep the last N releases', the running one's, the canary's, and any a container
    // uses; remove the other release images and leftover build tags.
    let keep_releases = usize::try_from(berth.config.keep_releases).unwrap_or(5);
    let releases = berth
        .store
        .releases(app.id, i64::MAX)
        .await
        .unwrap_or_default();
    let mut keep: HashSet<String> = releases
        .iter()
        .take(keep_releases)
        .map(|r| r.image.clone())
        .collect();
    if let Ok(Some(running)) = berth.store.running_release(app.id).await {
        keep.insert(running.image);
    }
    if let Ok(Some(canary)) = berth.store.canary(app.id).await
        && let Some(number) = canary.release
        && let Ok(Some(release)) = berth.store.release(app.id, number).await
    {
        keep.insert(release.image);
    }
    let used_ids: HashSet<String> = containers
        .iter()
        .filter_map(|c| c.image_id.clone())
        .collect();
    keep.extend(containers.iter().filter_map(|c| c.image.clone()));
    let images = scheduler.app_images(&app.name).await;
    for image in images {
        if used_ids.contains(&image.id) {
            continue;
        }
        // A dangling build result (its tag moved to a newer build of the same commit).
        if image.tags.iter().all(|t| t == "<none>:<none>") {
            if !dry_run && !scheduler.remove_unused_image(&image.id).await {
                continue;
            }
            removed.push(Removal {
                app: app.name.to_string(),
                kind: "image",
                name: image.id.chars().take(19).collect(),
                bytes: image.size,
            });
            continue;
        }
        let drop: Vec<&String> = image
            .tags
            .iter()
            .filter(|tag| !keep.contains(*tag) && tag.as_str() != "<none>:<none>")
            .collect();
        let all_go = drop.len() == image.tags.len();
        for tag in drop {
            if !dry_run && !scheduler.remove_unused_image(tag).await {
                continue;
            }
            removed.push(Removal {
                app: app.name.to_string(),
                kind: "image",
                name: tag.clone(),
                // The space comes back when the image's last tag goes.
                bytes: if all_go { image.size } else { 0 },
            });
        }
    }
    // Objects of pushes that never finished (quarantine directories git leaves when killed).
    // While a push to the app is in progress none is touched: a slow upload, or one waiting
    // for the lock behind a long deploy, keeps its quarantine however old (finding 32).
    if let Some(repo) = repo_dir(berth, &app.name).filter(|_| !berth.pushes.in_progress(app.id)) {
        let objects = repo.join("objects");
        for entry in std::fs::read_dir(&objects).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ABORTED_PUSH_AGE);
            if !(name.starts_with("tmp_objdir-incoming-") || name.starts_with("incoming-")) || !old
            {
                continue;
            }
            let bytes = dir_size(&entry.path());
            if !dry_run && std::fs::remove_dir_all(entry.path()).is_err() {
                continue;
            }
            removed.push(Removal {
                app: app.name.to_string(),
                kind: "push-temp",
                name,
                bytes,
            });
        }
    }
    removed
}

/// Prunes every app whose lock is free (a busy app is pruned after its own deploy).
pub async fn prune_all(berth: &Berth, scheduler: &Scheduler, dry_run: bool) -> Vec<Removal> {
    let mut removed = Vec::new();
    for app in berth.store.apps().await.unwrap_or_default() {
        let lock = berth.app_lock(app.id);
        let Ok(_guard) = lock.try_lock() else {
            continue;
        };
        // Read again under the lock: a rename may have come first.
        let Ok(Some(app)) = berth.store.app_by_id(app.id).await else {
            continue;
        };
        removed.extend(prune_app(berth, scheduler, &app, dry_run).await);
    }
    removed
}

/// Hourly retention for every app, and for webhook deliveries older than 30 days.
pub async fn prune_loop(berth: std::sync::Arc<Berth>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(error) = berth.store.prune_deliveries(30).await {
            tracing::warn!(%error, "cannot forget old webhook deliveries");
        }
        if let Ok(scheduler) = berth.scheduler().await {
            let removed = prune_all(&berth, &scheduler, false).await;
            if !removed.is_empty() {
                let bytes: u64 = removed.iter().map(|r| r.bytes).sum();
                tracing::info!(
                    items = removed.len(),
                    bytes,
                    "retention removed old images and leftovers"
                );
            }
        }
    }
}

/// `1.5 MB`-style sizes.
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Totals of removals by app, for reports.
pub fn totals(removed: &[Removal]) -> BTreeMap<String, (usize, u64)> {
    let mut totals: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for r in removed {
        let entry = totals.entry(r.app.clone()).or_default();
        entry.0 += 1;
        entry.1 += r.bytes;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500_000), "1.5 MB");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 100]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), vec![0u8; 50]).unwrap();
        assert_eq!(dir_size(dir.path()), 150);
    }
}
