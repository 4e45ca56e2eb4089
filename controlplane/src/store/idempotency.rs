//! The `idempotency_keys` table: claims of an `Idempotency-Key`, and the stored outcome a retry replays.

use sqlx::PgPool;
use uuid::Uuid;

/// A stored request under a key: (operation, request hash, status, response).
pub type Stored = (String, Vec<u8>, Option<i32>, Option<serde_json::Value>);

/// Claims `key` for a new request. False: the key exists.
pub async fn claim(db: &PgPool, org: Uuid, key: &str, operation: &str, hash: &[u8]) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO idempotency_keys (org_id, key, operation, request_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(org)
    .bind(key)
    .bind(operation)
    .bind(hash)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Takes over a claim of the same request left unfinished for 15 minutes (its replica died). True: taken.
pub async fn take_over(db: &PgPool, org: Uuid, key: &str, operation: &str, hash: &[u8]) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() WHERE org_id = $1 AND key = $2 AND operation = $3
            AND request_hash = $4 AND status IS NULL AND created_at < now() - interval '15 minutes'",
    )
    .bind(org)
    .bind(key)
    .bind(operation)
    .bind(hash)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What is stored under `key`.
pub async fn stored(db: &PgPool, org: Uuid, key: &str) -> Result<Stored, sqlx::Error> {
    sqlx::query_as(
        "SELECT operation, request_hash, status, response FROM idempotency_keys WHERE org_id = $1 AND key = $2",
    )
    .bind(org)
    .bind(key)
    .fetch_one(db)
    .await
}

/// Forgets `key` (its outcome may change on a retry).
pub async fn forget(db: &PgPool, org: Uuid, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE org_id = $1 AND key = $2").bind(org).bind(key).execute(db).await?;
    Ok(())
}

/// Stores the final outcome under `key`.
pub async fn finish(
    db: &PgPool,
    org: Uuid,
    key: &str,
    status: i32,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE org_id = $1 AND key = $2")
        .bind(org)
        .bind(key)
        .bind(status)
        .bind(body)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets keys older than `ttl_secs`.
pub async fn collect(db: &PgPool, ttl_secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
        .bind(ttl_secs)
        .execute(db)
        .await?;
    Ok(())
}
