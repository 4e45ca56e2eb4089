//! The statements of placement: the load of every schedulable runner, and a reservation taken under the runner's
//! row lock (so replicas placing at the same time serialize on it and never overbook a runner). A runner's usage
//! is the sum over its reserved boxes, never a counter beside them.

use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use super::boxes::{self, BoxRow, Change};
use crate::lifecycle::machine::BoxState;

/// A runner's capacity and what is reserved on it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunnerLoad {
    /// Runner id.
    pub id: Uuid,
    /// Runner name.
    pub name: String,
    /// vCPUs it offers.
    pub capacity_vcpus: i32,
    /// MiB it offers.
    pub capacity_memory_mib: i64,
    /// vCPUs reserved.
    pub used_vcpus: i64,
    /// MiB reserved.
    pub used_memory_mib: i64,
    /// Boxes booting there.
    pub starting: i64,
    /// Whether it has the box's snapshot cached.
    pub has_snapshot: bool,
}

/// Every ready runner that takes new boxes, has the `selector` labels and, for a snapshot box, a snapshot store.
pub async fn schedulable(
    db: &PgPool,
    selector: &serde_json::Value,
    snapshot: Option<&str>,
) -> Result<Vec<RunnerLoad>, sqlx::Error> {
    // One pass over the reservations (grouped) joined to the matching runners: cheaper than a per-runner lateral
    // aggregate when the fleet is large.
    sqlx::query_as(
        "WITH used AS (
            SELECT runner_id, sum(vcpus) AS vcpus, sum(memory_mib) AS mem,
                   count(*) FILTER (WHERE state IN ('pending', 'starting')) AS starting
              FROM boxes WHERE reserved GROUP BY runner_id)
         SELECT r.id, r.name, r.capacity_vcpus, r.capacity_memory_mib,
                coalesce(u.vcpus, 0)::bigint AS used_vcpus, coalesce(u.mem, 0)::bigint AS used_memory_mib,
                coalesce(u.starting, 0)::bigint AS starting,
                ($2::text IS NOT NULL AND $2 = ANY(r.cached_snapshots)) AS has_snapshot
           FROM runners r LEFT JOIN used u ON u.runner_id = r.id
          WHERE r.state = 'ready' AND NOT r.draining AND NOT r.cordoned AND r.labels @> $1
            AND ($2::text IS NULL OR r.snapshots_enabled)",
    )
    .bind(selector)
    .bind(snapshot)
    .fetch_all(db)
    .await
}

/// Reserves capacity for box `b` on `runner` and moves it to `starting` there, if `fits` accepts the runner's load
/// (re-read under its row lock). `pinned`: the box's disk is on this runner (a start), so a cordoned or draining
/// runner still takes it. Ok(None): the runner no longer fits or is not schedulable.
pub async fn reserve(
    db: &PgPool,
    b: &BoxRow,
    runner: Uuid,
    pinned: bool,
    fits: impl FnOnce(&RunnerLoad) -> bool,
) -> Result<Option<BoxRow>, StoreError> {
    let mut tx = db.begin().await?;
    let cap: Option<(String, i32, i64)> = sqlx::query_as(
        "SELECT name, capacity_vcpus, capacity_memory_mib FROM runners
          WHERE id = $1 AND state = 'ready' AND ($2 OR (NOT draining AND NOT cordoned))
          FOR UPDATE",
    )
    .bind(runner)
    .bind(pinned)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((name, capacity_vcpus, capacity_memory_mib)) = cap else { return Ok(None) };
    let (used_vcpus, used_memory_mib): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(vcpus), 0)::bigint, coalesce(sum(memory_mib), 0)::bigint
           FROM boxes WHERE runner_id = $1 AND reserved AND id <> $2",
    )
    .bind(runner)
    .bind(b.id)
    .fetch_one(&mut *tx)
    .await?;
    let load = RunnerLoad {
        id: runner,
        name,
        capacity_vcpus,
        capacity_memory_mib,
        used_vcpus,
        used_memory_mib,
        starting: 0,
        has_snapshot: false,
    };
    if !fits(&load) {
        return Ok(None);
    }
    let row = boxes::transition(&mut *tx, b, Change::to(BoxState::Starting).on_runner(runner).reserve().clear_reason())
        .await?;
    tx.commit().await?;
    Ok(Some(row))
}
