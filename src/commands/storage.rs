//! `storage:*`: persistent storage. A named volume (`NAME:/path`) is berth's own: made on the
//! engine as `berth-APP-NAME`, kept across redeploys, restarts, scaling and rollbacks, removed by
//! `apps:destroy` unless `--keep-data`. A host directory (`/host/dir:/path`) is admins' only.
//! Mounts belong to the app, not to a release: every process of every release gets them.

use super::common::{Access, Args, app_for, internal, to_json};
use crate::domain::MountKind;
use crate::ops;
use crate::output::Output;
use crate::server::{Berth, Identity};

/// Where processes may not have something mounted over them.
const RESERVED_PATHS: &[&str] = &[
    "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/usr",
];
/// Host directories nobody mounts into an app: the system's own, and the engine's socket.
const FORBIDDEN_HOST_DIRS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
    "/bin",
    "/sbin",
    "/lib",
    "/usr",
    "/run",
    "/var/run",
    "/var/lib/docker",
];

/// A volume name: lowercase letters, digits and '-', starting with a letter or digit.
fn check_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "missing volume name: use NAME:/path (a volume berth keeps) or /host/dir:/path"
                .to_string(),
        );
    }
    let ok = name.len() <= 40
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name {name:?}: lowercase letters, digits and '-', at most 40"
        ))
    }
}

/// An absolute path of plain components (no `.`, `..`, `:` or odd characters), not `/`.
fn check_path(path: &str, what: &str) -> Result<(), String> {
    let plain = path.starts_with('/')
        && path.len() <= 200
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        && path[1..]
            .trim_end_matches('/')
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if plain {
        Ok(())
    } else {
        Err(format!(
            "{what} {path:?} must be an absolute path like /data (letters, digits, '.', '_', '-'; no '..')"
        ))
    }
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

fn normalized(path: &str) -> String {
    path.trim_end_matches('/').to_string()
}

pub async fn mount(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let spec = &args.positional[1];
    let (source, path) = spec.rsplit_once(':').ok_or_else(|| {
        format!(
            "{spec:?} is not NAME:/path or /host/dir:/path; usage: storage:mount APP NAME:/path"
        )
    })?;
    check_path(path, "the mount path")?;
    let path = normalized(path);
    if let Some(reserved) = RESERVED_PATHS.iter().find(|r| under(&path, r)) {
        return Err(format!(
            "{path} is under {reserved}, which the app's system needs: mount somewhere like /data"
        ));
    }
    let (kind, name, engine_name) = if source.starts_with('/') {
        if !who.is_admin() {
            return Err(
                "not allowed: only admins mount host directories; use a named volume (NAME:/path)"
                    .to_string(),
            );
        }
        check_path(source, "the host directory")?;
        // Checked where it really is: a symlink to a system directory is that directory.
        let dir = match std::fs::canonicalize(source) {
            Ok(real) if real.is_dir() => real.to_string_lossy().to_string(),
            _ => {
                return Err(format!(
                    "{} is not a directory on this host: make it first",
                    normalized(source)
                ));
            }
        };
        // What is stored (and reaches the templates) is the real path: checked again, since a
        // symlink may point at a name with `"`, `:` or a newline (finding 24).
        check_path(&dir, "the host directory's real path")?;
        let data_dir = std::fs::canonicalize(&berth.config.data_dir)
            .unwrap_or_else(|_| berth.config.data_dir.clone())
            .to_string_lossy()
            .to_string();
        if FORBIDDEN_HOST_DIRS.iter().any(|f| under(&dir, f))
            || under(&dir, &data_dir)
            || under(&data_dir, &dir)
        {
            return Err(format!(
                "{dir} holds the system's or berth's own files: mount a directory of its own"
            ));
        }
        (MountKind::Host, dir.clone(), dir)
    } else {
        check_volume_name(source)?;
        (
            MountKind::Volume,
            source.to_string(),
            crate::deploy::names::volume_name(&app.uid, source),
        )
    };
    let app = ops::lock(berth, &app).await?;
    let mount = ops::NewMount {
        kind,
        name: &name,
        source: &engine_name,
        path: &path,
    };
    ops::mount(berth, &app, mount, &who.key_name, out).await?;
    // Volumes live on one node: on a swarm, the app's tasks stay on it.
    let pinned = if ops::target(berth, &app) == crate::deploy::render::Target::Swarm {
        "\n       its tasks run only on this swarm node, which holds the data (volumes are local to a node)"
    } else {
        ""
    };
    Ok(format!(
        "-----> Mounted {name} at {path} in {}{pinned}\n",
        app.name
    ))
}

pub async fn unmount(
    berth: &Berth,
    who: &Identity,
    args: &Args,
    out: &Output,
) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    // `storage:unmount APP /path` or the same `NAME:/path` that mounted it.
    let given = &args.positional[1];
    let path = normalized(given.rsplit_once(':').map_or(given.as_str(), |(_, p)| p));
    let app = ops::lock(berth, &app).await?;
    let Some(mount) = ops::mount_at(berth, &app, &path).await? else {
        return Err(format!(
            "{} mounts nothing at {path}; see storage:list {}",
            app.name, app.name
        ));
    };
    if mount.kind == MountKind::Host && !who.is_admin() {
        return Err("not allowed: only admins unmount host directories".to_string());
    }
    ops::unmount(berth, &app, &mount, &who.key_name, out).await?;
    let what = format!("{} at {}", mount.name, mount.path);
    let kept = if mount.kind == MountKind::Volume {
        format!(
            "; the volume keeps its data (mounting {} again gets it back; apps:destroy removes it)",
            mount.name
        )
    } else {
        String::new()
    };
    Ok(format!("-----> Unmounted {what}{kept}\n"))
}

pub async fn list(berth: &Berth, who: &Identity, args: &Args) -> Result<String, String> {
    let app = app_for(berth, who, &args.positional[0], Access::Operate).await?;
    let mounts = berth.store.mounts(app.id).await.map_err(internal)?;
    if args.json() {
        return to_json(&mounts);
    }
    if mounts.is_empty() {
        return Ok(format!(
            "{} has no mounts (storage:mount {} NAME:/path)\n",
            app.name, app.name
        ));
    }
    let width = mounts
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    let mut text = format!("{:<width$}  {:<6}  PATH\n", "SOURCE", "KIND");
    for m in &mounts {
        text += &format!("{:<width$}  {:<6}  {}\n", m.name, m.kind, m.path);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        assert!(check_volume_name("data").is_ok());
        assert!(
            check_volume_name("")
                .unwrap_err()
                .contains("missing volume name")
        );
        assert!(check_volume_name("Data").is_err());
        assert!(check_volume_name("-x").is_err());
        assert!(check_volume_name("../x").is_err());
        assert!(check_path("/data", "p").is_ok());
        assert!(check_path("/var/lib/app/", "p").is_ok());
        for bad in [
            "data", "/", "/a/../b", "/a/./b", "/a b", "/a:b", "//a", "/a$b",
        ] {
            assert!(check_path(bad, "p").is_err(), "{bad}");
        }
        assert!(under("/etc/x", "/etc") && under("/etc", "/etc") && !under("/etcx", "/etc"));
    }
}
