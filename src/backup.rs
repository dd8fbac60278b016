//! `berth backup FILE` and `berth restore FILE` (on the host): one tar archive with a
//! consistent snapshot of the DB (SQLite's `VACUUM INTO`, taken while the server runs), every
//! bare repo, the SSH host key (clients keep trusting the host), certificates, the ACME account
//! and the config file. Images are not in it: they are in the registry, and a restored server's
//! reconciler starts the apps' releases from there.
//!
//! Both write nothing half-way: a backup goes to `FILE.partial` and is renamed when complete; a
//! restore checks the whole archive, unpacks it beside the data, opens the DB, and only then
//! moves things into place.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::store::Store;

const MANIFEST: &str = "berth-backup.json";
const FORMAT: u64 = 1;
/// What an archive may hold at its top level (anything else is refused).
const TOP: &[&str] = &[
    MANIFEST,
    "berth.db",
    "repos",
    "ssh_host_ed25519_key",
    "certs",
    "acme",
    "berth.toml",
];

/// Writes the backup of the server configured by `config` (file `config_file`) to `file`;
/// gives a summary line.
pub async fn backup(
    config: &Config,
    config_file: Option<&Path>,
    file: &Path,
) -> Result<String, String> {
    let data = &config.data_dir;
    if !config.db_path().exists() {
        return Err(format!(
            "{} has no berth.db: nothing to back up (is data_dir right?)",
            data.display()
        ));
    }
    let store = Store::open(&config.db_path())
        .await
        .map_err(|e| format!("cannot open the DB: {e}"))?;
    let apps = store
        .apps()
        .await
        .map_err(|e| format!("cannot read the DB: {e}"))?
        .len();
    let work = tempdir_beside(file)?;
    let snapshot = work.join("berth.db");
    store
        .snapshot(&snapshot)
        .await
        .map_err(|e| format!("cannot snapshot the DB: {e}"))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&snapshot, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict the snapshot: {e}"))?;
    }
    let partial = PathBuf::from(format!("{}.partial", file.display()));
    let written = (|| -> std::io::Result<()> {
        let out = private_file(&partial)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        tar.follow_symlinks(false);
        let manifest = serde_json::json!({
            "format": FORMAT,
            "berth": env!("CARGO_PKG_VERSION"),
            "created_at": crate::metrics::rfc3339(std::time::SystemTime::now()),
            "apps": apps,
        });
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, MANIFEST, bytes.as_slice())?;
        tar.append_path_with_name(&snapshot, "berth.db")?;
        for (name, path) in [
            ("repos", config.repos_dir()),
            ("certs", config.certs_dir()),
            ("acme", data.join("acme")),
        ] {
            if path.is_dir() {
                tar.append_dir_all(name, &path)?;
            }
        }
        if config.host_key_path().exists() {
            tar.append_path_with_name(config.host_key_path(), "ssh_host_ed25519_key")?;
        }
        if let Some(config_file) = config_file.filter(|f| f.exists()) {
            tar.append_path_with_name(config_file, "berth.toml")?;
        }
        tar.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    })();
    let _ = std::fs::remove_dir_all(&work);
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(format!("cannot write {}: {error}", file.display()));
    }
    std::fs::rename(&partial, file).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "-----> Backed up {apps} app(s) (DB, repos, host key, certificates, config) to {} ({})",
        file.display(),
        crate::disk::human(size)
    ))
}

/// Restores `file` into the data dir of `config`, which must be a fresh install (no apps) with
/// berth stopped; gives a summary line.
pub async fn restore(config: &Config, file: &Path) -> Result<String, String> {
    let data = &config.data_dir;
    if std::os::unix::net::UnixStream::connect(config.hook_socket_path()).is_ok()
        || std::os::unix::net::UnixStream::connect(crate::dataplane::link::socket_path(config))
            .is_ok()
    {
        return Err(
            "berth is running on this data_dir: stop it first (berth stop), then restore"
                .to_string(),
        );
    }
    if config.db_path().exists() {
        let store = Store::open(&config.db_path())
            .await
            .map_err(|e| format!("cannot open the existing DB: {e}"))?;
        let apps = store
            .apps()
            .await
            .map_err(|e| format!("cannot read the existing DB: {e}"))?;
        if !apps.is_empty() {
            return Err(format!(
                "{} already has {} app(s): restore goes into a fresh install (move data_dir away first)",
                data.display(),
                apps.len()
            ));
        }
        store.close().await;
    }
    if config
        .repos_dir()
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        return Err(format!(
            "{} is not empty: restore goes into a fresh install",
            config.repos_dir().display()
        ));
    }
    std::fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let staging = data.join(".restore");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let result = unpack_and_check(file, &staging).await;
    let apps = match result {
        Ok(apps) => apps,
        Err(message) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(message);
        }
    };
    // Everything checked: move into place.
    for leftover in ["berth.db", "berth.db-wal", "berth.db-shm"] {
        let _ = std::fs::remove_file(data.join(leftover));
    }
    let _ = std::fs::remove_dir(config.repos_dir());
    let mut moved = Vec::new();
    for (name, target) in [
        ("berth.db", config.db_path()),
        ("berth.db-wal", data.join("berth.db-wal")),
        ("repos", config.repos_dir()),
        ("ssh_host_ed25519_key", config.host_key_path()),
        ("certs", config.certs_dir()),
        ("acme", data.join("acme")),
        ("berth.toml", data.join("restored-berth.toml")),
    ] {
        let source = staging.join(name);
        if !source.exists() {
            continue;
        }
        if target.is_dir() {
            let _ = std::fs::remove_dir_all(&target);
        }
        match std::fs::rename(&source, &target) {
            Ok(()) => {}
            // The check above opened the staged DB; SQLite checkpoints its WAL into berth.db and
            // deletes it when that last connection closes, which sqlx finishes on its own thread
            // a moment after `close()` returned: a WAL gone by now is in berth.db already.
            Err(e) if name == "berth.db-wal" && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot move {name} into place: {e}")),
        }
        moved.push(name);
    }
    let _ = std::fs::remove_dir_all(&staging);
    let config_note = if moved.contains(&"berth.toml") {
        format!(
            "; the old server's config is in {} (compare it with yours)",
            data.join("restored-berth.toml").display()
        )
    } else {
        String::new()
    };
    Ok(format!(
        "-----> Restored {} app(s) from {}: start berth and the apps come back from their release images{config_note}",
        apps,
        file.display()
    ))
}

/// Unpacks the archive into `staging` after checking every entry's path, then checks the
/// manifest and opens the DB (which also brings an older backup's schema up to date).
async fn unpack_and_check(file: &Path, staging: &Path) -> Result<usize, String> {
    let not_backup = |why: String| {
        format!(
            "{} is not a berth backup ({why}): nothing was restored",
            file.display()
        )
    };
    let archive =
        std::fs::File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(archive));
    // Modes come from the archive only masked: no setuid/setgid/sticky, nothing for others.
    tar.set_preserve_permissions(false);
    tar.set_mask(0o7077);
    tar.set_overwrite(false);
    let mut manifest = None;
    for entry in tar.entries().map_err(|e| not_backup(e.to_string()))? {
        let mut entry = entry.map_err(|e| not_backup(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| not_backup(e.to_string()))?
            .into_owned();
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        let top = path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("");
        if !plain || !TOP.contains(&top) {
            return Err(not_backup(format!("unexpected entry {}", path.display())));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(not_backup(format!(
                "{} is not a file or directory",
                path.display()
            )));
        }
        if path == Path::new(MANIFEST) {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| not_backup(e.to_string()))?;
            manifest = Some(text);
            continue;
        }
        entry
            .unpack_in(staging)
            .map_err(|e| not_backup(format!("{}: {e}", path.display())))?;
    }
    let manifest: serde_json::Value = manifest
        .ok_or_else(|| not_backup(format!("no {MANIFEST}")))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| not_backup(e.to_string())))?;
    if manifest["format"].as_u64() != Some(FORMAT) {
        return Err(not_backup(format!(
            "format {} is not {FORMAT}",
            manifest["format"]
        )));
    }
    let db = staging.join("berth.db");
    if !db.exists() {
        return Err(not_backup("no berth.db".to_string()));
    }
    let store = Store::open(&db)
        .await
        .map_err(|e| not_backup(format!("its DB does not open: {e}")))?;
    store
        .integrity_check()
        .await
        .map_err(|e| not_backup(format!("its DB is damaged: {e}")))?;
    let apps = store
        .apps()
        .await
        .map_err(|e| not_backup(e.to_string()))?
        .len();
    store.close().await;
    Ok(apps)
}

/// A new empty directory beside `file` (same file system, so renames are atomic).
fn tempdir_beside(file: &Path) -> Result<PathBuf, String> {
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Private and new: in a shared directory (/tmp) nobody else may own or read it, even for
    // the moment the snapshot sits there.
    use std::os::unix::fs::DirBuilderExt;
    let dir = parent.join(format!(
        ".berth-backup-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot write in {}: {e}", parent.display()))?;
    Ok(dir)
}

/// A file only the owner can read (backups hold keys and config values).
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temp_dir_is_private_new_and_unpredictable() {
        // Attack (finding 16): in /tmp, another user creates `.berth-backup-<pid>` first and
        // reads the DB snapshot berth writes into it. Now the name has 64 random bits, the
        // directory is created new (never an existing one) and 0700.
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("dir");
        let file = parent.path().join("backup.tar");
        let one = tempdir_beside(&file).expect("temp dir");
        let two = tempdir_beside(&file).expect("temp dir");
        assert_ne!(one, two);
        assert_eq!(one.parent(), Some(parent.path()));
        let mode = std::fs::metadata(&one).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
