//! State in SQLite through sqlx: one file per table (or close family of tables): `keys` (and
//! grants), `apps` (config, template approvals), `releases` (and canaries), `events`,
//! `domains` (and certificates), `mounts`, `links`, `webhooks` (deliveries, syncs); settings and
//! backup here.
//!
//! **Architecture Invariant:** this is the only module that knows SQL.
//! Row structs here are the serialization boundary for `--json` output.

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

use crate::domain::{AppState, ReleaseStatus, Role};
use crate::names::AppName;

mod apps;
mod domains;
mod events;
mod keys;
mod links;
mod mounts;
mod releases;
mod webhooks;

pub use apps::*;
pub use events::*;
pub use keys::*;
pub use links::*;
pub use mounts::*;
pub use releases::*;
pub use webhooks::*;

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// For a state write whose failure cannot change what the caller does next (an undo after a
/// failure, a cursor): the failure is logged with what was being written, never dropped.
pub trait LogFailure {
    fn or_log(self, what: &str);
}

impl<T> LogFailure for StoreResult<T> {
    fn or_log(self, what: &str) {
        if let Err(error) = self {
            tracing::error!(%error, what, "a state write failed");
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

/// Follows an error message that quotes a container's last log lines (`deploy::docker`).
pub const LOG_LINES_MARKER: &str = "\nlast log lines:";

impl Store {
    /// Opens (creating if needed) the DB in WAL mode and runs the embedded migrations.
    pub async fn open(path: &Path) -> StoreResult<Store> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    const APP_COLUMNS: &str = "id, name, owner, deploy_branch, state, labels, formation, stopped, port, target, resources, created_at, updated_at, uid, placement";

    const RELEASE_COLUMNS: &str = "id, app_id, number, commit_sha, image, status, created_by, description, host_port, created_at, config, manifest, digest";
}

impl Store {
    const LINK_SELECT: &str = "SELECT a.name AS app, d.name AS dep, links.alias, links.created_by, links.created_at FROM links JOIN apps a ON a.id = links.app_id JOIN apps d ON d.id = links.dep_id";

    const WEBHOOK_SELECT: &str = "SELECT webhooks.id, webhooks.url, webhooks.events, apps.name AS app, webhooks.secret, webhooks.created_by, webhooks.created_at FROM webhooks LEFT JOIN apps ON apps.id = webhooks.app_id";

    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// SQLite's own check of the DB file.
    pub async fn integrity_check(&self) -> Result<(), String> {
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        if result == "ok" { Ok(()) } else { Err(result) }
    }

    /// Closes every connection (the WAL is checkpointed into the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes a consistent copy of the whole DB to `path` (SQLite's `VACUUM INTO`), while the
    /// server keeps running.
    pub async fn snapshot(&self, path: &Path) -> StoreResult<()> {
        sqlx::query("VACUUM INTO ?")
            .bind(path.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_state_none_of_the_enums_has_is_settled_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let store = Store::open(&path).await.unwrap();
        let name = AppName::parse("odd").unwrap();
        store.ensure_app(&name, "admin").await.unwrap();
        sqlx::query("UPDATE apps SET state = 'sleeping'")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(
            store.app(&name).await.is_err(),
            "an unknown name fails the read"
        );
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 13")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let store = Store::open(&path).await.unwrap();
        let app = store.app(&name).await.unwrap().unwrap();
        assert_eq!(app.state, AppState::Unknown);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn releases_and_state_changes_made_at_once_all_succeed() {
        // Seen in CI: a push failed with "database is locked" (SQLITE_BUSY_SNAPSHOT, 517) when
        // the reconciler wrote between create_release's read of the next number and its insert.
        // Transactions that read before they write take the write lock first (IMMEDIATE), so
        // they wait for the other writer instead of failing.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let mut apps = Vec::new();
        for name in ["one", "two", "three", "four"] {
            let name = AppName::parse(name).unwrap();
            apps.push(store.ensure_app(&name, "admin").await.unwrap().0.id);
        }
        let mut tasks = Vec::new();
        for app_id in apps {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..40 {
                    store
                        .create_release(releases::NewRelease {
                            app_id,
                            commit_sha: "0123456789abcdef",
                            image: releases::ReleaseImage::Repository("berth/app"),
                            config: "{}",
                            manifest: "{}",
                            created_by: "test",
                            description: "race",
                        })
                        .await
                        .map_err(|e| format!("create_release: {e}"))?;
                    let state = if round % 2 == 0 {
                        AppState::Deploying
                    } else {
                        AppState::Running
                    };
                    store
                        .set_app_state(app_id, state, "test")
                        .await
                        .map_err(|e| format!("set_app_state: {e}"))?;
                }
                Ok::<(), String>(())
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn concurrent_first_pushes_make_one_app_and_say_whose() {
        // Finding 18: two keys push a new name at once; both passed the "no such app" check.
        // One insert wins; the other is told the app was found, not made, with its owner, so
        // `push::prepare_receive` checks its access again.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let name = AppName::parse("raced").unwrap();
        let (a, b) = tokio::join!(
            store.ensure_app(&name, "alice"),
            store.ensure_app(&name, "mallory")
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.0.id, b.0.id);
        assert!(a.1 != b.1, "exactly one made it");
        let maker = if a.1 { "alice" } else { "mallory" };
        assert_eq!(a.0.owner, maker);
        assert_eq!(b.0.owner, maker);
    }

    #[tokio::test]
    async fn rows_are_decoded_once_and_a_bad_column_or_name_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let name = AppName::parse("shop").unwrap();
        let (app, _) = store.ensure_app(&name, "alice").await.unwrap();
        assert_eq!(app.formation.0["web"], 1, "the column default");
        assert!(app.labels.0.is_empty() && app.resources.0.is_empty());
        store
            .set_formation(app.id, r#"{"web":2,"worker":1}"#)
            .await
            .unwrap();
        let read = store.app(&name).await.unwrap().unwrap();
        assert_eq!(
            (read.formation.0["web"], read.formation.0["worker"]),
            (2, 1)
        );
        // A column that is not what berth wrote fails the read, instead of reading as "web=1".
        sqlx::query("UPDATE apps SET formation = 'web=3' WHERE id = ?")
            .bind(app.id)
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(store.app(&name).await.is_err());
        // So does a name that is not an app name (every name is checked again when read).
        sqlx::query("UPDATE apps SET formation = '{}', name = '../etc' WHERE id = ?")
            .bind(app.id)
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(store.app_by_id(app.id).await.is_err());
    }

    #[tokio::test]
    async fn old_finished_deliveries_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("berth.db")).await.unwrap();
        let hook = store
            .add_webhook("http://127.0.0.1:9/", "*", None, "s", "admin")
            .await
            .unwrap();
        for _ in 0..3 {
            store
                .add_delivery(hook, "deploy.succeeded", None, "{}")
                .await
                .unwrap();
        }
        // 1: old and delivered (goes), 2: old but pending (stays), 3: new and delivered (stays).
        store
            .delivery_attempted(1, "delivered", "HTTP 200", 0)
            .await
            .unwrap();
        store
            .delivery_attempted(3, "delivered", "HTTP 200", 0)
            .await
            .unwrap();
        sqlx::query("UPDATE deliveries SET created_at = '2020-01-01T00:00:00Z' WHERE id IN (1, 2)")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.prune_deliveries(30).await.unwrap(), 1);
        let left: Vec<i64> = store
            .deliveries(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(left, [3, 2]);
    }
}
