//! The `join_tokens` table as the admin API uses it (the registry checks tokens in `crate::registry`).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A join token as listed (never its secret or hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// Token id.
    pub id: Uuid,
    /// Visible prefix.
    pub prefix: String,
    /// What it is for.
    pub description: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Registrations made with it.
    pub uses: i32,
}

const COLS: &str = "id, prefix, description, created_at, expires_at, revoked_at, uses";

/// Inserts a token valid for `ttl_secs`.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    prefix: &str,
    hash: &[u8],
    description: &str,
    created_by: Uuid,
    ttl_secs: f64,
) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(sql!(
        "INSERT INTO join_tokens (id, prefix, hash, description, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING {COLS}"
    ))
    .bind(Uuid::now_v7())
    .bind(prefix)
    .bind(hash)
    .bind(description)
    .bind(created_by)
    .bind(ttl_secs)
    .fetch_one(&mut **tx)
    .await
}

/// Every token, oldest first.
pub async fn list(db: &PgPool) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(sql!("SELECT {COLS} FROM join_tokens ORDER BY id")).fetch_all(db).await
}

/// Revokes a token (idempotent); None: no such token.
pub async fn revoke(db: &PgPool, id: Uuid) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}
