//! State in SQLite through sqlx: keys, apps, releases, events.
//!
//! **Architecture Invariant:** this is the only module that knows SQL.
//! Row structs here are the serialization boundary for `--json` output.

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

use crate::names::AppName;

pub type StoreResult<T> = Result<T, sqlx::Error>;

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Key {
    pub name: String,
    pub fingerprint: String,
    pub role: String,
    #[serde(skip)]
    pub public_key: String,
    pub created_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct App {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub owner: String,
    pub deploy_branch: Option<String>,
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Release {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub app_id: i64,
    pub number: i64,
    pub commit_sha: String,
    pub image: String,
    pub status: String,
    pub created_by: String,
    pub description: String,
    pub host_port: Option<i64>,
    pub created_at: String,
}

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

    // ---- keys

    pub async fn add_key(
        &self,
        name: &str,
        fingerprint: &str,
        public_key: &str,
        role: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO keys (name, fingerprint, public_key, role) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(fingerprint)
            .bind(public_key)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn key_by_fingerprint(&self, fingerprint: &str) -> StoreResult<Option<Key>> {
        sqlx::query_as("SELECT name, fingerprint, role, public_key, created_at FROM keys WHERE fingerprint = ?")
            .bind(fingerprint)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn key_by_name(&self, name: &str) -> StoreResult<Option<Key>> {
        sqlx::query_as(
            "SELECT name, fingerprint, role, public_key, created_at FROM keys WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    // ---- apps

    const APP_COLUMNS: &str = "id, name, owner, deploy_branch, state, created_at, updated_at";

    pub async fn app(&self, name: &AppName) -> StoreResult<Option<App>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM apps WHERE name = ?",
            Self::APP_COLUMNS
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn apps(&self) -> StoreResult<Vec<App>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM apps ORDER BY name",
            Self::APP_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Creates the app if missing and returns it; `created` says whether this call made it.
    pub async fn ensure_app(&self, name: &AppName, owner: &str) -> StoreResult<(App, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO apps (name, owner) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let app = self.app(name).await?.ok_or(sqlx::Error::RowNotFound)?;
        Ok((app, inserted))
    }

    pub async fn set_app_state(&self, app_id: i64, state: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET state = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?")
            .bind(state)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_app(&self, app_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM apps WHERE id = ?")
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- releases

    const RELEASE_COLUMNS: &str = "id, app_id, number, commit_sha, image, status, created_by, description, host_port, created_at";

    /// Allocates the next release number for the app and records it with status `releasing`.
    pub async fn create_release(
        &self,
        app_id: i64,
        commit_sha: &str,
        image_repo: &str,
        created_by: &str,
        description: &str,
    ) -> StoreResult<Release> {
        let mut tx = self.pool.begin().await?;
        let (number,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE app_id = ?")
                .bind(app_id)
                .fetch_one(&mut *tx)
                .await?;
        let image = format!("{image_repo}:v{number}");
        let release: Release = sqlx::query_as(&format!(
            "INSERT INTO releases (app_id, number, commit_sha, image, status, created_by, description)
             VALUES (?, ?, ?, ?, 'releasing', ?, ?) RETURNING {}",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .bind(number)
        .bind(commit_sha)
        .bind(&image)
        .bind(created_by)
        .bind(description)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(release)
    }

    pub async fn set_release_status(&self, release_id: i64, status: &str) -> StoreResult<()> {
        sqlx::query("UPDATE releases SET status = ? WHERE id = ?")
            .bind(status)
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the release running on `host_port` and every other running release of the app superseded.
    pub async fn mark_release_running(&self, release: &Release, host_port: u16) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE releases SET status = 'superseded' WHERE app_id = ? AND status = 'running' AND id != ?")
            .bind(release.app_id)
            .bind(release.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE releases SET status = 'running', host_port = ? WHERE id = ?")
            .bind(i64::from(host_port))
            .bind(release.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The release that is serving, if any.
    pub async fn running_release(&self, app_id: i64) -> StoreResult<Option<Release>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM releases WHERE app_id = ? AND status = 'running' ORDER BY number DESC LIMIT 1",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn latest_release(&self, app_id: i64) -> StoreResult<Option<Release>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM releases WHERE app_id = ? ORDER BY number DESC LIMIT 1",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
    }

    // ---- events

    pub async fn record_event(
        &self,
        app_id: Option<i64>,
        kind: &str,
        actor: &str,
        outcome: &str,
        detail: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO events (app_id, kind, actor, outcome, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(app_id)
        .bind(kind)
        .bind(actor)
        .bind(outcome)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
