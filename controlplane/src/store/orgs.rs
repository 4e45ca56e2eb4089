//! The `orgs` and `org_quotas` tables: an org's quota (read under its row lock by the box lifecycle, so that
//! concurrent creates and starts in one org serialize on it), names, and the admin API's reads and writes.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::config::Quota;

/// The org's quota, locked until `tx` ends.
pub async fn lock_quota(tx: &mut Transaction<'_, Postgres>, org: Uuid) -> Result<Quota, sqlx::Error> {
    sqlx::query_as(
        "SELECT max_boxes, max_vcpus, max_memory_mib, max_box_vcpus, max_box_memory_mib, max_box_disk_mib
           FROM org_quotas WHERE org_id = $1 FOR UPDATE",
    )
    .bind(org)
    .fetch_one(&mut **tx)
    .await
}

/// An org's quota (None: no such org).
pub async fn quota(db: &sqlx::PgPool, org: Uuid) -> Result<Option<Quota>, sqlx::Error> {
    sqlx::query_as(
        "SELECT max_boxes, max_vcpus, max_memory_mib, max_box_vcpus, max_box_memory_mib, max_box_disk_mib
           FROM org_quotas WHERE org_id = $1",
    )
    .bind(org)
    .fetch_optional(db)
    .await
}

/// Replaces an org's quota. False: no such org.
pub async fn set_quota(tx: &mut Transaction<'_, Postgres>, org: Uuid, q: &Quota) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE org_quotas SET max_boxes = $2, max_vcpus = $3, max_memory_mib = $4, max_box_vcpus = $5,
                max_box_memory_mib = $6, max_box_disk_mib = $7, updated_at = now() WHERE org_id = $1",
    )
    .bind(org)
    .bind(q.max_boxes)
    .bind(q.max_vcpus)
    .bind(q.max_memory_mib)
    .bind(q.max_box_vcpus)
    .bind(q.max_box_memory_mib)
    .bind(q.max_box_disk_mib)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// An org's name and creation time.
pub async fn get(db: &sqlx::PgPool, org: Uuid) -> Result<Option<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT name, created_at FROM orgs WHERE id = $1").bind(org).fetch_optional(db).await
}

/// Whether an org exists.
pub async fn exists(db: &sqlx::PgPool, org: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)").bind(org).fetch_one(db).await
}

/// Whether an org of this name exists.
pub async fn name_taken(tx: &mut Transaction<'_, Postgres>, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE name = $1)").bind(name).fetch_one(&mut **tx).await
}

/// Every org id, oldest first.
pub async fn list(db: &sqlx::PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM orgs ORDER BY id").fetch_all(db).await
}

/// What keeps an org from being deleted: its boxes that are not deleted, and its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct OrgUse {
    /// Boxes not deleted (any state, `lost` included).
    pub boxes: i64,
    /// Snapshots of the org (any state).
    pub snapshots: i64,
}

/// Locks an org (its quota row, which every box create and start in the org also locks) and counts what it still
/// has. None: no such org.
pub async fn lock_for_delete(
    tx: &mut Transaction<'_, Postgres>,
    org: Uuid,
) -> Result<Option<(String, OrgUse)>, sqlx::Error> {
    let name: Option<String> = sqlx::query_scalar(
        "SELECT o.name FROM orgs o JOIN org_quotas q ON q.org_id = o.id WHERE o.id = $1 FOR UPDATE OF o, q",
    )
    .bind(org)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(name) = name else { return Ok(None) };
    let used: OrgUse = sqlx::query_as(
        "SELECT (SELECT count(*) FROM boxes WHERE org_id = $1 AND deleted_at IS NULL) AS boxes,
                (SELECT count(*) FROM snapshots WHERE org_id = $1) AS snapshots",
    )
    .bind(org)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some((name, used)))
}

/// Revokes every key of an org, then deletes the org with what is left of it (its quota, keys, deleted boxes and
/// their executions, idempotency records). Returns how many keys were still live.
pub async fn delete(tx: &mut Transaction<'_, Postgres>, org: Uuid) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE org_id = $1 AND revoked_at IS NULL")
        .bind(org)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM orgs WHERE id = $1").bind(org).execute(&mut **tx).await?;
    Ok(revoked)
}
