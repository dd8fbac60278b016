use super::*;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct App {
    #[serde(skip)]
    pub id: i64,
    /// Checked again when read (`AppName::parse`).
    #[sqlx(try_from = "String")]
    pub name: AppName,
    pub owner: String,
    pub deploy_branch: Option<String>,
    pub state: AppState,
    /// Labels (`{"team":"web"}` in the DB), decoded with the row: a bad column fails the read.
    pub labels: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    /// Process type → instances (`{"web":1}`).
    pub formation: sqlx::types::Json<std::collections::BTreeMap<String, u32>>,
    /// Set by `ps:stop`: nothing of the app should run.
    pub stopped: bool,
    /// The stable public port of the app (berth's proxy), once it has one.
    pub port: Option<i64>,
    /// `apps:set APP target=…`; none means the server's `default_target`.
    pub target: Option<crate::domain::Target>,
    /// Process type → `{cpu, memory}` (`resources:set`).
    pub resources:
        sqlx::types::Json<std::collections::BTreeMap<String, crate::deploy::render::Resources>>,
    pub created_at: String,
    pub updated_at: String,
    /// Random, never reused (SQLite may reuse a destroyed app's id): names and labels the
    /// app's engine volumes.
    #[serde(skip)]
    pub uid: String,
    /// Swarm placement constraints (`apps:set APP placement=node.labels.zone==eu`).
    pub placement: sqlx::types::Json<Vec<String>>,
}

impl Store {
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

    /// Moves the app to `state`; a change of state is recorded as an event by `actor`.
    pub async fn set_app_state(
        &self,
        app_id: i64,
        state: AppState,
        actor: &str,
    ) -> StoreResult<()> {
        // IMMEDIATE: read, then write (see `create_release`).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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

    pub async fn set_target(
        &self,
        app_id: i64,
        target: Option<crate::domain::Target>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET target = ? WHERE id = ?")
            .bind(target)
            .bind(app_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_placement(&self, app_id: i64, placement_json: &str) -> StoreResult<()> {
        sqlx::query("UPDATE apps SET placement = ? WHERE id = ?")
            .bind(placement_json)
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
}
