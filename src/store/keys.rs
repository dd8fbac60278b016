use super::*;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Key {
    pub name: String,
    pub fingerprint: String,
    pub role: Role,
    #[serde(skip)]
    pub public_key: String,
    pub created_at: String,
}

impl Store {
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
}
