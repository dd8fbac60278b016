//! Mounts (`storage:mount`, `storage:unmount`): recorded, then applied by a rolling restart of a
//! running app; when the restart fails the change is undone and what ran keeps running.

use super::formation::restart;
use super::lock::LockedApp;
use crate::domain::MountKind;
use crate::error::internal;
use crate::output::Output;
use crate::server::Berth;
use crate::store::Mount;

/// A mount the command checked: what it is, its name, what the engine mounts, where.
pub struct NewMount<'a> {
    pub kind: MountKind,
    /// The volume's name, or the host directory.
    pub name: &'a str,
    /// The volume's engine name, or the host directory.
    pub source: &'a str,
    pub path: &'a str,
}

/// Mounts `mount` in the app (a named volume is made first) and applies it; on failure nothing
/// stays mounted.
pub async fn mount(
    berth: &Berth,
    app: &LockedApp,
    mount: NewMount<'_>,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    if let Some(existing) = store
        .mounts(app.id)
        .await
        .map_err(internal)?
        .into_iter()
        .find(|m| {
            m.path == mount.path
                || (mount.kind == MountKind::Volume
                    && m.kind == MountKind::Volume
                    && m.name == mount.name)
        })
    {
        return Err(format!(
            "{} already mounts {} at {}: storage:unmount {} {} first",
            app.name, existing.name, existing.path, app.name, existing.path
        ));
    }
    if mount.kind == MountKind::Volume {
        let scheduler = berth.scheduler().await?;
        scheduler
            .ensure_volume(mount.source, &app.name, &app.uid)
            .await?;
    }
    store
        .add_mount(
            app.id,
            mount.name,
            mount.kind,
            mount.source,
            mount.path,
            actor,
        )
        .await
        .map_err(internal)?;
    let what = format!("{} at {}", mount.name, mount.path);
    if let Err(message) = apply(berth, app, actor, &format!("storage:mount {what}"), out).await {
        if let Err(error) = store.remove_mount(app.id, mount.path).await {
            tracing::error!(app = %app.name, %error, "cannot take back a mount that failed");
        }
        return Err(format!("{message}; nothing was mounted"));
    }
    store
        .note_event(Some(app.id), "storage", actor, "mounted", &what)
        .await;
    Ok(())
}

/// The app's mount at `path`, if any.
pub async fn mount_at(berth: &Berth, app: &LockedApp, path: &str) -> Result<Option<Mount>, String> {
    Ok(berth
        .store
        .mounts(app.id)
        .await
        .map_err(internal)?
        .into_iter()
        .find(|m| m.path == path))
}

/// Unmounts `mount` and applies it; on failure it stays mounted. A volume keeps its data.
pub async fn unmount(
    berth: &Berth,
    app: &LockedApp,
    mount: &Mount,
    actor: &str,
    out: &Output,
) -> Result<(), String> {
    let store = &berth.store;
    store
        .remove_mount(app.id, &mount.path)
        .await
        .map_err(internal)?;
    let what = format!("{} at {}", mount.name, mount.path);
    if let Err(message) = apply(berth, app, actor, &format!("storage:unmount {what}"), out).await {
        if let Err(error) = store
            .add_mount(
                app.id,
                &mount.name,
                mount.kind,
                &mount.source,
                &mount.path,
                &mount.created_by,
            )
            .await
        {
            tracing::error!(app = %app.name, %error, "cannot put back a mount");
        }
        return Err(format!("{message}; it stays mounted"));
    }
    store
        .note_event(Some(app.id), "storage", actor, "unmounted", &what)
        .await;
    Ok(())
}

/// A running app restarts (one container at a time) so every process sees the change.
async fn apply(
    berth: &Berth,
    app: &LockedApp,
    actor: &str,
    why: &str,
    out: &Output,
) -> Result<(), String> {
    let running = berth
        .store
        .running_release(app.id)
        .await
        .map_err(internal)?
        .is_some();
    if app.stopped || !running {
        out.step("It applies when the app next starts");
        return Ok(());
    }
    restart(berth, app, actor, why, out).await
}
