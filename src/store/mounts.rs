use super::*;

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

impl Store {
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
}
