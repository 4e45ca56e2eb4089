//! The org statements the box lifecycle needs: an org's quota, read under its row lock (concurrent creates and
//! starts in one org serialize on it).

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
