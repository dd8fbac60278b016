use super::*;

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

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Event {
    pub id: i64,
    pub kind: String,
    pub actor: String,
    pub outcome: String,
    pub detail: String,
    pub created_at: String,
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
}
