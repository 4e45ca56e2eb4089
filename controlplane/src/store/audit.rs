//! Reading the `audit_log` table (entries are written by `crate::db::audit`, inside the transaction of the action).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// An audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The acting key.
    pub actor_key: Option<Uuid>,
    /// The acting key's org.
    pub actor_org: Option<Uuid>,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details.
    pub details: serde_json::Value,
}

/// The newest `limit` entries, newest first.
pub async fn newest(db: &PgPool, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor_key, actor_org, action, target, details FROM audit_log ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
