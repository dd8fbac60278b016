use super::*;

/// Where a new release's image comes from.
pub enum ReleaseImage<'a> {
    /// A fresh build: the release is tagged `<repository>:v<N>`.
    Repository(&'a str),
    /// An image an earlier release already has.
    Existing(&'a str),
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
    /// The config vars this release runs with (never shown unmasked by default), decoded with
    /// the row.
    #[serde(skip)]
    pub config: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    /// JSON of the release's manifest (`manifest::Manifest`: Procfile, app.json).
    #[serde(skip)]
    pub manifest: String,
    /// `sha256:…` of the image in the registry, once pushed: pulls are by digest.
    pub digest: Option<String>,
}

/// An app's canary.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Canary {
    pub weight: u8,
    /// The canary's release number; none until the next push deploys it.
    pub release: Option<i64>,
}

impl Store {
    /// `set_release_status`, logging a failed write (see `move_app`).
    pub async fn move_release(&self, release_id: i64, status: ReleaseStatus) {
        if let Err(error) = self.set_release_status(release_id, status).await {
            tracing::error!(release_id, %status, %error, "cannot record the release's status");
        }
    }

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
        // IMMEDIATE: this transaction reads, then writes. A deferred one would fail at once with
        // SQLITE_BUSY_SNAPSHOT (517, "database is locked") when another connection wrote in
        // between (seen in CI); taking the write lock first makes it wait (busy_timeout) instead.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
