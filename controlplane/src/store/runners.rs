//! The `runners` table as the admin API uses it: views with their reservations, flags, removal. (The registry
//! writes registrations and heartbeats in `crate::registry`.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A runner as the admin API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunnerRow {
    /// Runner id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// Its API address.
    pub address: String,
    /// ready, unresponsive or lost.
    pub state: String,
    /// Being drained.
    pub draining: bool,
    /// Takes no new boxes.
    pub cordoned: bool,
    /// Its labels.
    pub labels: Json<BTreeMap<String, String>>,
    /// vCPUs offered.
    pub capacity_vcpus: i32,
    /// MiB offered.
    pub capacity_memory_mib: i64,
    /// Disk MiB offered.
    pub capacity_disk_mib: i64,
    /// vCPUs reserved by boxes.
    pub allocated_vcpus: i64,
    /// MiB reserved by boxes.
    pub allocated_memory_mib: i64,
    /// Boxes in its last heartbeat.
    pub reported_boxes: i32,
    /// Running boxes in its last heartbeat.
    pub reported_running: i32,
    /// Its version.
    pub version: String,
    /// Its VM backend.
    pub backend: String,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat_at: DateTime<Utc>,
}

const SELECT_RUNNER: &str = "SELECT r.id, r.name, r.address, r.state, r.draining, r.cordoned, r.labels, r.capacity_vcpus,
        r.capacity_memory_mib, r.capacity_disk_mib,
        (SELECT coalesce(sum(vcpus), 0)::bigint FROM boxes b WHERE b.runner_id = r.id AND b.reserved) AS allocated_vcpus,
        (SELECT coalesce(sum(memory_mib), 0)::bigint FROM boxes b WHERE b.runner_id = r.id AND b.reserved) AS allocated_memory_mib,
        r.reported_boxes, r.reported_running, r.version, r.backend, r.registered_at, r.last_heartbeat_at FROM runners r";

/// A runner by id.
pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<RunnerRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_RUNNER} WHERE r.id = $1")).bind(id).fetch_optional(db).await
}

/// Every runner by name.
pub async fn list(db: &PgPool) -> Result<Vec<RunnerRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_RUNNER} ORDER BY r.name")).fetch_all(db).await
}

/// Sets the flags given (None: unchanged). False: no such runner.
pub async fn set_flags(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    draining: Option<bool>,
    cordoned: Option<bool>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE runners SET draining = coalesce($2, draining), cordoned = coalesce($3, cordoned) WHERE id = $1",
    )
    .bind(id)
    .bind(draining)
    .bind(cordoned)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Locks a runner's row for removal; returns its name.
pub async fn lock(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM runners WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut **tx).await
}

/// Removes a runner.
pub async fn delete(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM runner_usage WHERE runner_id = $1").bind(id).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM runners WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}
