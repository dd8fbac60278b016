use super::*;

impl Store {
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
}
