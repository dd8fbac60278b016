//! `system:*`: what berth uses on this host's disk, and freeing it now (admins only: it spans
//! every app).

use super::common::{Args, admin_only_for, internal, to_json};
use crate::disk::{self, human};
use crate::server::{Berth, Identity};

pub async fn df(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "system:df")?;
    let scheduler = berth.scheduler().await?;
    let mut rows = Vec::new();
    for app in berth.store.apps().await.map_err(internal)? {
        rows.push(disk::usage(berth, &scheduler, &app).await);
    }
    let data_dir = &berth.config.data_dir;
    let db = ["berth.db", "berth.db-wal", "berth.db-shm"]
        .iter()
        .map(|f| disk::dir_size(&data_dir.join(f)))
        .sum::<u64>();
    let logs = disk::dir_size(&berth.config.logs_dir());
    if args.json() {
        #[derive(serde::Serialize)]
        struct Df<'a> {
            apps: &'a [disk::Usage],
            db_bytes: u64,
            logs_bytes: u64,
        }
        return to_json(&Df {
            apps: &rows,
            db_bytes: db,
            logs_bytes: logs,
        });
    }
    let width = rows.iter().map(|r| r.app.len()).max().unwrap_or(3).max(3);
    let mut text = format!(
        "{:<width$}  {:>16}  {:>16}  {:>10}  {:>10}\n",
        "APP", "IMAGES", "VOLUMES", "REPO", "LOGS"
    );
    for r in &rows {
        text += &format!(
            "{:<width$}  {:>16}  {:>16}  {:>10}  {:>10}\n",
            r.app,
            format!("{} ({})", human(r.images_bytes), r.images),
            format!("{} ({})", human(r.volumes_bytes), r.volumes),
            human(r.repo_bytes),
            human(r.logs_bytes)
        );
    }
    text += &format!(
        "berth itself: database {}, access logs {}\n(image sizes include layers shared with other images, as in `docker image ls`)\n",
        human(db),
        human(logs)
    );
    Ok(text)
}

pub async fn prune(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    admin_only_for(who, "system:prune")?;
    let scheduler = berth.scheduler().await?;
    let dry_run = args.has("--dry-run");
    let removed = disk::prune_all(berth, &scheduler, dry_run).await;
    if args.json() {
        return to_json(&removed);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    if removed.is_empty() {
        return Ok(format!(
            "nothing to remove (each app keeps the images of its last {} releases)\n",
            berth.config.keep_releases
        ));
    }
    let mut text = String::new();
    for r in &removed {
        text += &format!("{}: {verb} {} {}\n", r.app, r.kind, r.name);
    }
    let bytes: u64 = removed.iter().map(|r| r.bytes).sum();
    text += &format!(
        "-----> {} {} item(s), {} (each app keeps the images of its last {} releases)\n",
        if dry_run { "Would free" } else { "Freed" },
        removed.len(),
        human(bytes),
        berth.config.keep_releases
    );
    if !dry_run {
        berth
            .store
            .note_event(
                None,
                "system:prune",
                &who.key_name,
                "ok",
                &format!("{} items, {bytes} bytes", removed.len()),
            )
            .await;
    }
    Ok(text)
}
