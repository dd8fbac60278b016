use super::*;

/// One link: `app` gets `alias`_URL/_HOST/_PORT of `dep`.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Link {
    pub app: String,
    pub dep: String,
    pub alias: String,
    pub created_by: String,
    pub created_at: String,
}

impl Store {
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
}
