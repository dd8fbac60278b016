use super::*;

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

impl Store {
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
}
