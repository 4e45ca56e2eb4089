//! The `api_keys` table as the key management API uses it (authentication reads it in `crate::auth`).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A key as listed (never its secret or hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// Key id.
    pub id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// The visible prefix of the secret.
    pub prefix: String,
    /// Its role's name.
    pub role: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, org_id, name, prefix, role, created_at, last_used_at, revoked_at";

/// What a new key records.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// Its org.
    pub org: Uuid,
    /// Its name.
    pub name: &'a str,
    /// Visible prefix.
    pub prefix: &'a str,
    /// SHA-256 of the secret.
    pub hash: &'a [u8],
    /// Role name.
    pub role: &'a str,
    /// The key that created it.
    pub created_by: Uuid,
}

/// Inserts a key; returns its id.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, k: &NewKey<'_>) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, prefix, hash, role, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(k.org)
    .bind(k.name)
    .bind(k.prefix)
    .bind(k.hash)
    .bind(k.role)
    .bind(k.created_by)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// A key by id.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sql!("SELECT {COLS} FROM api_keys WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// An org's keys, oldest first.
pub async fn list(db: &PgPool, org: Uuid) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(sql!("SELECT {COLS} FROM api_keys WHERE org_id = $1 ORDER BY id")).bind(org).fetch_all(db).await
}

/// Revokes a key of `org` (idempotent); None: no such key there.
pub async fn revoke(tx: &mut Transaction<'_, Postgres>, org: Uuid, id: Uuid) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND org_id = $2 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(org)
    .fetch_optional(&mut **tx)
    .await
}
