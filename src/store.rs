//! State in SQLite through sqlx: keys, apps, releases, events.
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

pub type StoreResult<T> = Result<T, sqlx::Error>;

/// Where a new release's image comes from.
pub enum ReleaseImage<'a> {
    /// A fresh build: the release is tagged `<repository>:v<N>`.
    Repository(&'a str),
    /// An image an earlier release already has.
    Existing(&'a str),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Key {
    pub name: String,
    pub fingerprint: String,
    pub role: Role,
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
    pub state: AppState,
    /// JSON object of labels (`{"team":"web"}`).
    pub labels: String,
    /// JSON object of process type → instances (`{"web":1}`).
    pub formation: String,
    /// Set by `ps:stop`: nothing of the app should run.
    pub stopped: bool,
    /// The stable public port of the app (berth's proxy), once it has one.
    pub port: Option<i64>,
    /// `apps:set APP target=…`; none means the server's `default_target`.
    pub target: Option<String>,
    /// JSON object of process type → `{cpu, memory}` (`resources:set`).
    pub resources: String,
    pub created_at: String,
    pub updated_at: String,
    /// Random, never reused (SQLite may reuse a destroyed app's id): names and labels the
    /// app's engine volumes.
    #[serde(skip)]
    pub uid: String,
}

/// Follows an error message that quotes a container's last log lines (`deploy::docker`).
pub const LOG_LINES_MARKER: &str = "\nlast log lines:";

/// An event's detail as kept and sent to webhooks: never a container's log lines (apps print
/// secrets when they crash; finding 30), at most 2 KiB.
pub fn event_detail(detail: &str) -> &str {
    let detail = detail.split(LOG_LINES_MARKER).next().unwrap_or_default();
    let mut end = detail.len().min(2048);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    &detail[..end]
}

/// What a new release is made of (`create_release`).
pub struct NewRelease<'a> {
    pub app_id: i64,
    pub commit_sha: &'a str,
    pub image: ReleaseImage<'a>,
    /// JSON object of config vars.
    pub config: &'a str,
    /// JSON of the release's manifest (`manifest::Manifest`).
    pub manifest: &'a str,
    pub created_by: &'a str,
    pub description: &'a str,
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
    pub status: ReleaseStatus,
    pub created_by: String,
    pub description: String,
    pub host_port: Option<i64>,
    pub created_at: String,
    /// JSON object of the config vars this release runs with (never shown unmasked by default).
    #[serde(skip)]
    pub config: String,
    /// JSON of the release's manifest (`manifest::Manifest`: Procfile, app.json).
    #[serde(skip)]
    pub manifest: String,
    /// `sha256:…` of the image in the registry, once pushed: pulls are by digest.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub actor: String,
    pub outcome: String,
    pub detail: String,
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
        role: Role,
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

    const APP_COLUMNS: &str = "id, name, owner, deploy_branch, state, labels, formation, stopped, port, target, resources, created_at, updated_at, uid";

    pub async fn app(&self, name: &AppName) -> StoreResult<Option<App>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM apps WHERE name = ?",
            Self::APP_COLUMNS
        ))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn app_by_id(&self, id: i64) -> StoreResult<Option<App>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM apps WHERE id = ?",
            Self::APP_COLUMNS
        ))
        .bind(id)
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
            "INSERT INTO apps (name, owner, uid) VALUES (?, ?, lower(hex(randomblob(8)))) ON CONFLICT (name) DO NOTHING",
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

    /// `set_app_state`, for callers whose work goes on whatever the DB says: a failed write
    /// is logged, never dropped silently.
    pub async fn move_app(&self, app_id: i64, state: AppState, actor: &str) {
        if let Err(error) = self.set_app_state(app_id, state, actor).await {
            tracing::error!(app_id, %state, %error, "cannot record the app's state");
        }
    }

    /// `set_release_status`, logging a failed write (see `move_app`).
    pub async fn move_release(&self, release_id: i64, status: ReleaseStatus) {
        if let Err(error) = self.set_release_status(release_id, status).await {
            tracing::error!(release_id, %status, %error, "cannot record the release's status");
        }
    }

    /// Moves the app to `state`; a change of state is recorded as an event by `actor`.
    pub async fn set_app_state(
        &self,
        app_id: i64,
        state: AppState,
        actor: &str,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let old: Option<(String,)> = sqlx::query_as("SELECT state FROM apps WHERE id = ?")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((old,)) = old else { return Ok(()) };
        if old != state.as_str() {
            sqlx::query("UPDATE apps SET state = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?")
                .bind(state)
                .bind(app_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO events (app_id, app_name, kind, actor, outcome, detail) VALUES (?1, COALESCE((SELECT name FROM apps WHERE id = ?1), ''), 'state', ?2, ?3, ?4)")
                .bind(app_id)
                .bind(actor)
                .bind(state)
                .bind(format!("{old} -> {state}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    pub async fn delete_app(&self, app_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM apps WHERE id = ?")
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- releases

    const RELEASE_COLUMNS: &str = "id, app_id, number, commit_sha, image, status, created_by, description, host_port, created_at, config, manifest, digest";

    /// Allocates the next release number for the app and records it with status `releasing`.
    /// `image` is `Image::Repository` for a new build (tagged `repo:vN`) or `Image::Existing`
    /// for a release that reuses an image (config change, rollback).
    pub async fn create_release(&self, new: NewRelease<'_>) -> StoreResult<Release> {
        let NewRelease {
            app_id,
            commit_sha,
            image,
            config,
            manifest,
            created_by,
            description,
        } = new;
        let mut tx = self.pool.begin().await?;
        let (number,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE app_id = ?")
                .bind(app_id)
                .fetch_one(&mut *tx)
                .await?;
        let image = match image {
            ReleaseImage::Repository(repository) => format!("{repository}:v{number}"),
            ReleaseImage::Existing(image) => image.to_string(),
        };
        let release: Release = sqlx::query_as(&format!(
            "INSERT INTO releases (app_id, number, commit_sha, image, status, created_by, description, config, manifest, digest)
             VALUES (?1, ?2, ?3, ?4, 'releasing', ?5, ?6, ?7, ?8,
                     (SELECT digest FROM releases WHERE app_id = ?1 AND image = ?4 AND digest IS NOT NULL ORDER BY number DESC LIMIT 1))
             RETURNING {}",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .bind(number)
        .bind(commit_sha)
        .bind(&image)
        .bind(created_by)
        .bind(description)
        .bind(config)
        .bind(manifest)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(release)
    }

    pub async fn set_release_digest(&self, release_id: i64, digest: &str) -> StoreResult<()> {
        sqlx::query("UPDATE releases SET digest = ? WHERE id = ?")
            .bind(digest)
            .bind(release_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_release_status(
        &self,
        release_id: i64,
        status: ReleaseStatus,
    ) -> StoreResult<()> {
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

    /// `record_event`, logging a failed write instead of dropping it: for callers whose work
    /// is done whether or not its event is kept.
    pub async fn note_event(
        &self,
        app_id: Option<i64>,
        kind: &str,
        actor: &str,
        outcome: &str,
        detail: &str,
    ) {
        if let Err(error) = self
            .record_event(app_id, kind, actor, outcome, detail)
            .await
        {
            tracing::error!(?app_id, kind, outcome, %error, "cannot record an event");
        }
    }

    pub async fn record_event(
        &self,
        app_id: Option<i64>,
        kind: &str,
        actor: &str,
        outcome: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let detail = event_detail(detail);
        sqlx::query(
            "INSERT INTO events (app_id, app_name, kind, actor, outcome, detail) VALUES (?1, COALESCE((SELECT name FROM apps WHERE id = ?1), ''), ?2, ?3, ?4, ?5)",
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

    pub async fn events(&self, app_id: i64, limit: i64) -> StoreResult<Vec<Event>> {
        let mut events: Vec<Event> = sqlx::query_as(
            "SELECT id, kind, actor, outcome, detail, created_at FROM events WHERE app_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(app_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        events.reverse();
        Ok(events)
    }

    /// The kept events of destroyed apps once named `name` (the audit trail: admins only).
    pub async fn events_of_destroyed(&self, name: &str, limit: i64) -> StoreResult<Vec<Event>> {
        let mut events: Vec<Event> = sqlx::query_as(
            "SELECT id, kind, actor, outcome, detail, created_at FROM events WHERE app_id IS NULL AND app_name = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        events.reverse();
        Ok(events)
    }

    // ---- more keys, grants

    /// How many apps the key name owns (`member_max_apps`).
    pub async fn apps_owned_by(&self, owner: &str) -> StoreResult<usize> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE owner = ?")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// What a key name still holds besides a key: owned apps, webhooks, sync sources, links
    /// (`["apps a, b", "1 webhook"]`); empty when the name is free of history.
    pub async fn left_by_key_name(&self, name: &str) -> StoreResult<Vec<String>> {
        let apps: Vec<String> =
            sqlx::query_scalar("SELECT name FROM apps WHERE owner = ? ORDER BY name")
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
        let mut left = Vec::new();
        if !apps.is_empty() {
            left.push(format!("apps {}", apps.join(", ")));
        }
        for (table, what) in [
            ("webhooks", "webhook"),
            ("syncs", "git:sync source"),
            ("links", "link"),
        ] {
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE created_by = ?"
            ))
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
            if count > 0 {
                left.push(format!(
                    "{count} {what}{}",
                    if count == 1 { "" } else { "s" }
                ));
            }
        }
        Ok(left)
    }

    pub async fn keys(&self) -> StoreResult<Vec<Key>> {
        sqlx::query_as(
            "SELECT name, fingerprint, role, public_key, created_at FROM keys ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Removes the key (and its grants); false when there was none of that name.
    pub async fn remove_key(&self, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM keys WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn grant(&self, app_id: i64, key_name: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO grants (app_id, key_name) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(app_id)
            .bind(key_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn revoke(&self, app_id: i64, key_name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM grants WHERE app_id = ? AND key_name = ?")
            .bind(app_id)
            .bind(key_name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn grants(&self, app_id: i64) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT key_name FROM grants WHERE app_id = ? ORDER BY key_name")
                .bind(app_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    // ---- more apps

    /// Creates the app; false when one of that name exists already.
    pub async fn create_app(&self, name: &AppName, owner: &str) -> StoreResult<bool> {
        Ok(self.ensure_app(name, owner).await?.1)
    }

    pub async fn rename_app(&self, app_id: i64, new_name: &AppName) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET name = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?")
            .bind(new_name.as_str())
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_labels(&self, app_id: i64, labels_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET labels = ? WHERE id = ?")
            .bind(labels_json)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_formation(&self, app_id: i64, formation_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET formation = ? WHERE id = ?")
            .bind(formation_json)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_port(&self, app_id: i64, port: u16) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET port = ? WHERE id = ?")
            .bind(i64::from(port))
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_deploy_branch(&self, app_id: i64, branch: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET deploy_branch = ? WHERE id = ?")
            .bind(branch)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_target(&self, app_id: i64, target: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET target = ? WHERE id = ?")
            .bind(target)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_resources(&self, app_id: i64, resources_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET resources = ? WHERE id = ?")
            .bind(resources_json)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_stopped(&self, app_id: i64, stopped: bool) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET stopped = ? WHERE id = ?")
            .bind(stopped)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- config

    pub async fn config(
        &self,
        app_id: i64,
    ) -> StoreResult<std::collections::BTreeMap<String, String>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM config_vars WHERE app_id = ?")
                .bind(app_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Replaces the app's config vars with `config` in one transaction.
    pub async fn replace_config(
        &self,
        app_id: i64,
        config: &std::collections::BTreeMap<String, String>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM config_vars WHERE app_id = ?")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        for (key, value) in config {
            sqlx::query("INSERT INTO config_vars (app_id, key, value) VALUES (?, ?, ?)")
                .bind(app_id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    // ---- more releases

    pub async fn releases(&self, app_id: i64, limit: i64) -> StoreResult<Vec<Release>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM releases WHERE app_id = ? ORDER BY number DESC LIMIT ?",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn release(&self, app_id: i64, number: i64) -> StoreResult<Option<Release>> {
        sqlx::query_as(&format!(
            "SELECT {} FROM releases WHERE app_id = ? AND number = ?",
            Self::RELEASE_COLUMNS
        ))
        .bind(app_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await
    }

    // ---- domains

    /// Every approved custom domain (what the router serves and ACME certifies):
    /// (domain, app name).
    pub async fn domains(&self) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT domains.name, apps.name FROM domains JOIN apps ON apps.id = domains.app_id WHERE domains.approved = 1 ORDER BY domains.name",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// The app a domain belongs to, if any.
    pub async fn domain_owner(&self, domain: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT apps.name FROM domains JOIN apps ON apps.id = domains.app_id WHERE domains.name = ?",
        )
        .bind(domain)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn add_domain(&self, app_id: i64, domain: &str, approved: bool) -> StoreResult<()> {
        sqlx::query("INSERT INTO domains (name, app_id, approved) VALUES (?, ?, ?)")
            .bind(domain)
            .bind(app_id)
            .bind(approved)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Approves the app's pending domain; whether it was pending.
    pub async fn approve_domain(&self, app_id: i64, domain: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE domains SET approved = 1 WHERE name = ? AND app_id = ? AND approved = 0",
        )
        .bind(domain)
        .bind(app_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The app's domains waiting for an admin's approval.
    pub async fn pending_domains(&self, app_id: i64) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT name FROM domains WHERE app_id = ? AND approved = 0 ORDER BY name",
        )
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Removes the app's domain; whether it was there.
    pub async fn remove_domain(&self, app_id: i64, domain: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM domains WHERE name = ? AND app_id = ?")
            .bind(domain)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- certificates

    /// Records where the app's certificate came from (`manual` or `acme`).
    pub async fn set_certificate_source(&self, app_id: i64, source: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO certificates (app_id, source) VALUES (?, ?) ON CONFLICT (app_id) DO UPDATE SET source = excluded.source, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
        )
        .bind(app_id)
        .bind(source)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn certificate_source(&self, app_id: i64) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT source FROM certificates WHERE app_id = ?")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn remove_certificate(&self, app_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM certificates WHERE app_id = ?")
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Apps whose certificate berth gets over ACME: (id, name).
    pub async fn acme_apps(&self) -> StoreResult<Vec<(i64, String)>> {
        sqlx::query_as(
            "SELECT apps.id, apps.name FROM certificates JOIN apps ON apps.id = certificates.app_id WHERE certificates.source = 'acme' ORDER BY apps.name",
        )
        .fetch_all(&self.pool)
        .await
    }

    // ---- canaries

    /// The app's canary: its weight and release (None: the next push).
    pub async fn canary(&self, app_id: i64) -> StoreResult<Option<Canary>> {
        sqlx::query_as(
            "SELECT canaries.weight, releases.number AS release FROM canaries LEFT JOIN releases ON releases.id = canaries.release_id WHERE canaries.app_id = ?",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn start_canary(&self, app_id: i64, weight: u8, actor: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO canaries (app_id, weight, created_by) VALUES (?, ?, ?)")
            .bind(app_id)
            .bind(weight)
            .bind(actor)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_canary_weight(&self, app_id: i64, weight: u8) -> StoreResult<()> {
        sqlx::query("UPDATE canaries SET weight = ? WHERE app_id = ?")
            .bind(weight)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the release now serving as the app's canary (status `canary`).
    pub async fn set_canary_release(&self, release: &Release) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE canaries SET release_id = ? WHERE app_id = ?")
            .bind(release.id)
            .bind(release.app_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE releases SET status = 'canary' WHERE id = ?")
            .bind(release.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Ends the app's canary; a canary release still marked `canary` becomes `status`.
    pub async fn end_canary(&self, app_id: i64, status: ReleaseStatus) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE releases SET status = ? WHERE app_id = ? AND status = 'canary'")
            .bind(status)
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM canaries WHERE app_id = ?")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

/// An app's canary.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Canary {
    pub weight: u8,
    /// The canary's release number; none until the next push deploys it.
    pub release: Option<i64>,
}

/// A mount of an app (`storage:mount`).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Mount {
    /// The volume's name (`NAME` of `NAME:/path`) or the host directory.
    pub name: String,
    /// A volume of berth's own (removed with the app) or a host directory.
    pub kind: crate::domain::MountKind,
    /// What the engine mounts: the volume's engine name, or the host directory.
    pub source: String,
    pub path: String,
    pub created_by: String,
    pub created_at: String,
}

/// One link: `app` gets `alias`_URL/_HOST/_PORT of `dep`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Link {
    pub app: String,
    pub dep: String,
    pub alias: String,
    pub created_by: String,
    pub created_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub events: String,
    pub app: Option<String>,
    #[serde(skip)]
    pub secret: String,
    pub created_by: String,
    pub created_at: String,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    pub app: Option<String>,
    #[serde(skip)]
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub response: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An app's `git:sync` source and inbound webhook.
#[derive(Debug, Clone, FromRow)]
pub struct Sync {
    pub url: String,
    pub git_ref: Option<String>,
    pub token_hash: Option<String>,
    pub refused: i64,
    /// The key that set this source (`git:sync`).
    pub created_by: String,
}

/// An event as the webhook dispatcher reads it.
#[derive(Debug, Clone, FromRow)]
pub struct AppEvent {
    pub id: i64,
    pub app_id: Option<i64>,
    pub app: Option<String>,
    pub kind: String,
    pub actor: String,
    pub outcome: String,
    pub detail: String,
    pub created_at: String,
}

impl Store {
    // ---- storage

    pub async fn mounts(&self, app_id: i64) -> StoreResult<Vec<Mount>> {
        sqlx::query_as("SELECT name, kind, source, path, created_by, created_at FROM mounts WHERE app_id = ? ORDER BY path")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await
    }

    /// The engine names of the named volumes other apps than this one mount.
    pub async fn volumes_of_other_apps(&self, app_id: i64) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT source FROM mounts WHERE kind = 'volume' AND app_id != ?")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await
    }

    /// Records a mount; false when the app already mounts something at that path.
    pub async fn add_mount(
        &self,
        app_id: i64,
        name: &str,
        kind: crate::domain::MountKind,
        source: &str,
        path: &str,
        actor: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query("INSERT OR IGNORE INTO mounts (app_id, name, kind, source, path, created_by) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(app_id)
            .bind(name)
            .bind(kind)
            .bind(source)
            .bind(path)
            .bind(actor)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn remove_mount(&self, app_id: i64, path: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM mounts WHERE app_id = ? AND path = ?")
            .bind(app_id)
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- links

    const LINK_SELECT: &str = "SELECT a.name AS app, d.name AS dep, links.alias, links.created_by, links.created_at FROM links JOIN apps a ON a.id = links.app_id JOIN apps d ON d.id = links.dep_id";

    /// The links of the app (what it depends on).
    pub async fn links_from(&self, app_id: i64) -> StoreResult<Vec<Link>> {
        sqlx::query_as(&format!(
            "{} WHERE links.app_id = ? ORDER BY links.alias",
            Self::LINK_SELECT
        ))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The links to the app (the apps that depend on it).
    pub async fn links_to(&self, dep_id: i64) -> StoreResult<Vec<Link>> {
        sqlx::query_as(&format!(
            "{} WHERE links.dep_id = ? ORDER BY a.name",
            Self::LINK_SELECT
        ))
        .bind(dep_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Every link as (app id, dep id), for cycle checks.
    pub async fn link_edges(&self) -> StoreResult<Vec<(i64, i64)>> {
        sqlx::query_as("SELECT app_id, dep_id FROM links")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn add_link(
        &self,
        app_id: i64,
        dep_id: i64,
        alias: &str,
        actor: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO links (app_id, dep_id, alias, created_by) VALUES (?, ?, ?, ?)")
            .bind(app_id)
            .bind(dep_id)
            .bind(alias)
            .bind(actor)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_link(&self, app_id: i64, dep_id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM links WHERE app_id = ? AND dep_id = ?")
            .bind(app_id)
            .bind(dep_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- webhooks

    const WEBHOOK_SELECT: &str = "SELECT webhooks.id, webhooks.url, webhooks.events, apps.name AS app, webhooks.secret, webhooks.created_by, webhooks.created_at FROM webhooks LEFT JOIN apps ON apps.id = webhooks.app_id";

    pub async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        sqlx::query_as(&format!("{} ORDER BY webhooks.id", Self::WEBHOOK_SELECT))
            .fetch_all(&self.pool)
            .await
    }

    pub async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>> {
        sqlx::query_as(&format!("{} WHERE webhooks.id = ?", Self::WEBHOOK_SELECT))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn add_webhook(
        &self,
        url: &str,
        events: &str,
        app_id: Option<i64>,
        secret: &str,
        actor: &str,
    ) -> StoreResult<i64> {
        let done = sqlx::query(
            "INSERT INTO webhooks (url, events, app_id, secret, created_by) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(url)
        .bind(events)
        .bind(app_id)
        .bind(secret)
        .bind(actor)
        .execute(&self.pool)
        .await?;
        Ok(done.last_insert_rowid())
    }

    pub async fn remove_webhook(&self, id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Events after `after` (by id), oldest first, with their app's name.
    pub async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<AppEvent>> {
        sqlx::query_as("SELECT events.id, events.app_id, COALESCE(apps.name, NULLIF(events.app_name, '')) AS app, events.kind, events.actor, events.outcome, events.detail, events.created_at FROM events LEFT JOIN apps ON apps.id = events.app_id WHERE events.id > ? ORDER BY events.id LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn last_event_id(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.pool)
            .await
    }

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

    pub async fn add_delivery(
        &self,
        webhook_id: i64,
        event: &str,
        app: Option<&str>,
        payload: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO deliveries (webhook_id, event, app, payload, status) VALUES (?, ?, ?, ?, 'pending')")
            .bind(webhook_id)
            .bind(event)
            .bind(app)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Pending deliveries due at `now` (unix seconds).
    pub async fn due_deliveries(&self, now: i64) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as("SELECT id, webhook_id, event, app, payload, status, attempts, response, created_at, updated_at FROM deliveries WHERE status = 'pending' AND next_at <= ? ORDER BY id LIMIT 50")
            .bind(now)
            .fetch_all(&self.pool)
            .await
    }

    /// Records an attempt: its outcome, the new status, and when to try again.
    pub async fn delivery_attempted(
        &self,
        id: i64,
        status: &str,
        response: &str,
        next_at: i64,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE deliveries SET status = ?, response = ?, attempts = attempts + 1, next_at = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now') WHERE id = ?")
            .bind(status)
            .bind(response)
            .bind(next_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets finished deliveries older than `days`; gives how many.
    pub async fn prune_deliveries(&self, days: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM deliveries WHERE status != 'pending' AND created_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?)")
            .bind(format!("-{days} days"))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The newest deliveries, of one webhook or all.
    pub async fn deliveries(
        &self,
        webhook_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as("SELECT id, webhook_id, event, app, payload, status, attempts, response, created_at, updated_at FROM deliveries WHERE ? IS NULL OR webhook_id = ? ORDER BY id DESC LIMIT ?")
            .bind(webhook_id)
            .bind(webhook_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    // ---- git:sync and inbound webhooks

    pub async fn sync(&self, app_id: i64) -> StoreResult<Option<Sync>> {
        sqlx::query_as(
            "SELECT url, git_ref, token_hash, refused, created_by FROM syncs WHERE app_id = ?",
        )
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn set_sync(
        &self,
        app_id: i64,
        url: &str,
        git_ref: Option<&str>,
        created_by: &str,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO syncs (app_id, url, git_ref, created_by) VALUES (?, ?, ?, ?) ON CONFLICT (app_id) DO UPDATE SET url = excluded.url, git_ref = excluded.git_ref, created_by = excluded.created_by")
            .bind(app_id)
            .bind(url)
            .bind(git_ref)
            .bind(created_by)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_sync_token(&self, app_id: i64, token_hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE syncs SET token_hash = ? WHERE app_id = ?")
            .bind(token_hash)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_refused_sync(&self, app_id: i64, count: u64) -> StoreResult<()> {
        sqlx::query("UPDATE syncs SET refused = refused + ? WHERE app_id = ?")
            .bind(i64::try_from(count).unwrap_or(i64::MAX))
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every inbound webhook: (app name, app id, token hash).
    pub async fn inbound_tokens(&self) -> StoreResult<Vec<(String, i64, String)>> {
        sqlx::query_as("SELECT apps.name, apps.id, syncs.token_hash FROM syncs JOIN apps ON apps.id = syncs.app_id WHERE syncs.token_hash IS NOT NULL")
            .fetch_all(&self.pool)
            .await
    }

    // ---- template approvals

    /// Records that an admin approved this `.berth/templates/` tree for the app.
    pub async fn approve_templates(&self, app_id: i64, tree: &str, by: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO template_approvals (app_id, tree, approved_by) VALUES (?, ?, ?) \
             ON CONFLICT (app_id, tree) DO NOTHING",
        )
        .bind(app_id)
        .bind(tree)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn templates_approved(&self, app_id: i64, tree: &str) -> StoreResult<bool> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM template_approvals WHERE app_id = ? AND tree = ?")
                .bind(app_id)
                .bind(tree)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }

    /// Withdraws every approval of the app's templates; how many there were.
    pub async fn revoke_templates(&self, app_id: i64) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM template_approvals WHERE app_id = ?")
                .bind(app_id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    // ---- backup

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
