//! The statements of placement: the load of every schedulable runner, and a reservation taken under the runner's
//! row lock (so replicas placing at the same time serialize on it and never overbook a runner). A runner's usage
//! is the sum over its reserved boxes: the reservation computes it from them; ranking reads `runner_usage`, which a
//! trigger keeps equal to that sum in the same transaction as every box change (migration 0005).

use sqlx::PgPool;
use uuid::Uuid;

use super::StoreError;
use super::boxes::{self, BoxRow, Change};
use crate::machine::BoxState;

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

/// What placement asks of the runners it considers.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    /// Labels the runner must have (a JSON object).
    pub selector: &'a serde_json::Value,
    /// The snapshot digest the box boots from.
    pub snapshot: Option<&'a str>,
    /// vCPUs and MiB the box needs.
    pub vcpus: i32,
    /// MiB the box needs.
    pub memory_mib: i64,
    /// Capacity multipliers.
    pub cpu_overcommit: f64,
    /// Capacity multipliers.
    pub memory_overcommit: f64,
    /// Runners already tried.
    pub exclude: &'a [Uuid],
    /// At most this many, best first.
    pub limit: i64,
}

/// The ready runners that take new boxes, have the selector's labels (and a snapshot store for a snapshot box),
/// are not excluded and have room for the box: the best `limit` by the scheduler's score (see
/// `crate::scheduler`, which re-scores them), and whether any runner matched the labels at all.
pub async fn schedulable(db: &PgPool, w: &Want<'_>) -> Result<(bool, Vec<RunnerLoad>), sqlx::Error> {
    // Each runner's usage from `runner_usage` (kept by a trigger: one row per runner, no aggregate over its boxes),
    // the fit and the score in SQL, and only the best few rows back: the fleet can be large. The reservation
    // re-checks the fit against the boxes themselves.
    let rows: Vec<Shortlisted> = sqlx::query_as(
        "WITH m AS (
            SELECT r.id, r.name, r.capacity_vcpus, r.capacity_memory_mib,
                   ($2::text IS NOT NULL AND $2 = ANY(r.cached_snapshots)) AS has_snapshot,
                   coalesce(u.vcpus, 0) AS used_vcpus, coalesce(u.memory_mib, 0) AS used_memory_mib,
                   coalesce(u.starting, 0) AS starting
              FROM runners r LEFT JOIN runner_usage u ON u.runner_id = r.id
             WHERE r.state = 'ready' AND NOT r.draining AND NOT r.cordoned AND r.labels @> $1
               AND ($2::text IS NULL OR r.snapshots_enabled)),
         fit AS (
            SELECT m.* FROM m
             WHERE NOT (m.id = ANY($7))
               AND m.capacity_vcpus * $5 - m.used_vcpus >= $3
               AND m.capacity_memory_mib * $6 - m.used_memory_mib >= $4
             ORDER BY (m.capacity_memory_mib * $6 - m.used_memory_mib) / greatest(m.capacity_memory_mib * $6, 1)
                    + (m.capacity_vcpus * $5 - m.used_vcpus) / greatest(m.capacity_vcpus * $5, 1)
                    - 0.25 * m.starting
                    + CASE WHEN $2::text IS NOT NULL AND m.has_snapshot THEN 1.5 ELSE 0 END DESC
             LIMIT $8)
         SELECT EXISTS (SELECT 1 FROM m) AS matched, f.id, f.name, f.capacity_vcpus, f.capacity_memory_mib,
                f.used_vcpus, f.used_memory_mib, f.starting, f.has_snapshot
           FROM (SELECT 1) one LEFT JOIN fit f ON true",
    )
    .bind(w.selector)
    .bind(w.snapshot)
    .bind(f64::from(w.vcpus))
    .bind(w.memory_mib as f64)
    .bind(w.cpu_overcommit)
    .bind(w.memory_overcommit)
    .bind(w.exclude)
    .bind(w.limit)
    .fetch_all(db)
    .await?;
    let matched = rows.first().is_some_and(|r| r.matched);
    let loads = rows
        .into_iter()
        .filter_map(|r| {
            Some(RunnerLoad {
                id: r.id?,
                name: r.name?,
                capacity_vcpus: r.capacity_vcpus?,
                capacity_memory_mib: r.capacity_memory_mib?,
                used_vcpus: r.used_vcpus?,
                used_memory_mib: r.used_memory_mib?,
                starting: r.starting?,
                has_snapshot: r.has_snapshot?,
            })
        })
        .collect();
    Ok((matched, loads))
}

/// A row of the short list: whether any runner matched, and one runner that fits (none: all NULL).
#[derive(sqlx::FromRow)]
struct Shortlisted {
    matched: bool,
    id: Option<Uuid>,
    name: Option<String>,
    capacity_vcpus: Option<i32>,
    capacity_memory_mib: Option<i64>,
    used_vcpus: Option<i64>,
    used_memory_mib: Option<i64>,
    starting: Option<i64>,
    has_snapshot: Option<bool>,
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
