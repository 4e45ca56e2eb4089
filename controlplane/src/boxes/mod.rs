//! Box lifecycle: the operations the API and the reconciler share — create (quota + insert), place (scheduler +
//! runner call, with fallback), start, stop, delete — and the mapping between runner states and ours.
//!
//! States: `pending → starting → running → stopping → stopped`, plus `error` (placement or boot failed) and `lost`
//! (its runner disappeared). `desired_state` is what the user asked for (`running`, `stopped`, `deleted`); the
//! reconciler drives the state towards it when a direct call could not.

use std::time::Duration;

use axum::http::StatusCode;
use boxyard_proto::runner as pb;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::runners::request;
use crate::scheduler::{self, Demand, ScheduleError};
use crate::state::AppState;

/// States in which a box counts against its org's quota.
pub const ACTIVE_STATES: &str = "('pending', 'starting', 'running', 'stopping')";

pub const SELECT_BOX: &str =
    "SELECT id, org_id, name, snapshot, vcpus, memory_mib, disk_mib, env, labels, runner_selector,
        runner_id, reserved, state, desired_state, reason, auto_stop_seconds, ttl_seconds, created_at, updated_at,
        started_at, stopped_at, last_activity_at, deleted_at, snapshot_id, snapshot_digest FROM boxes";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoxRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: Option<String>,
    pub snapshot: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub disk_mib: i64,
    pub env: Json<std::collections::BTreeMap<String, String>>,
    pub labels: Json<std::collections::BTreeMap<String, String>>,
    pub runner_selector: Json<std::collections::BTreeMap<String, String>>,
    pub runner_id: Option<Uuid>,
    pub reserved: bool,
    pub state: String,
    pub desired_state: String,
    pub reason: Option<String>,
    pub auto_stop_seconds: Option<i32>,
    pub ttl_seconds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub snapshot_id: Option<Uuid>,
    pub snapshot_digest: Option<String>,
}

impl BoxRow {
    pub fn demand(&self) -> Demand {
        Demand {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            selector: serde_json::to_value(&self.runner_selector.0).unwrap_or_default(),
            snapshot: self.snapshot_digest.clone(),
        }
    }

    fn spec(&self, snapshot: Option<pb::SnapshotRef>) -> pb::BoxSpec {
        pb::BoxSpec {
            root: snapshot.map(pb::box_spec::Root::Snapshot),
            vcpus: self.vcpus as u32,
            memory_mib: self.memory_mib as u32,
            disk_mib: self.disk_mib as u64,
            env: self.env.0.clone().into_iter().collect(),
        }
    }
}

/// What a new box asks for (validated by the API layer).
#[derive(Debug, Clone)]
pub struct NewBox {
    pub name: Option<String>,
    /// The snapshot's name as the user gave it, and the resolved snapshot.
    pub snapshot: Option<String>,
    pub snapshot_row: Option<crate::snapshots::SnapshotRow>,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub disk_mib: i64,
    pub env: std::collections::BTreeMap<String, String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub runner_selector: std::collections::BTreeMap<String, String>,
    pub auto_stop_seconds: Option<i32>,
    pub ttl_seconds: Option<i32>,
}

/// Loads a box of `org` (404 for other orgs' and deleted boxes).
pub async fn get(st: &AppState, org: Uuid, id: Uuid) -> ApiResult<BoxRow> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL"))
        .bind(id)
        .bind(org)
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::not_found("box", id))
}

pub async fn load(db: &sqlx::PgPool, id: Uuid) -> Result<Option<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Checks the org's quota for one more active box of this size (inside `tx`, which holds the org's quota row).
async fn check_quota(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    org: Uuid,
    vcpus: i32,
    memory_mib: i64,
    disk_mib: i64,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let q: crate::config::Quota = sqlx::query_as(
        "SELECT max_boxes, max_vcpus, max_memory_mib, max_box_vcpus, max_box_memory_mib, max_box_disk_mib
           FROM org_quotas WHERE org_id = $1 FOR UPDATE",
    )
    .bind(org)
    .fetch_one(&mut **tx)
    .await?;
    let per_box = |what: &str, asked: i64, max: i64| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "a box may have at most {max} {what} in this org (asked for {asked}); ask an admin to raise the quota"
            ),
        )
    };
    if vcpus > q.max_box_vcpus {
        return Err(per_box("vCPUs", vcpus.into(), q.max_box_vcpus.into()));
    }
    if memory_mib > q.max_box_memory_mib {
        return Err(per_box("MiB of memory", memory_mib, q.max_box_memory_mib));
    }
    if disk_mib > q.max_box_disk_mib {
        return Err(per_box("MiB of disk", disk_mib, q.max_box_disk_mib));
    }
    let (n, cpu, mem): (i64, i64, i64) = sqlx::query_as(sql!(
        "SELECT count(*), coalesce(sum(vcpus), 0)::bigint, coalesce(sum(memory_mib), 0)::bigint FROM boxes
          WHERE org_id = $1 AND deleted_at IS NULL AND state IN {ACTIVE_STATES} AND ($2::uuid IS NULL OR id <> $2)"
    ))
    .bind(org)
    .bind(except)
    .fetch_one(&mut **tx)
    .await?;
    let total = |what: &str, used: i64, asked: i64, max: i64| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "the org's quota allows {max} {what} in active boxes; {used} are in use and this box needs {asked}. \
                 Stop or delete boxes, or ask an admin to raise the quota"
            ),
        )
    };
    if n + 1 > q.max_boxes.into() {
        return Err(total("boxes", n, 1, q.max_boxes.into()));
    }
    if cpu + i64::from(vcpus) > q.max_vcpus.into() {
        return Err(total("vCPUs", cpu, vcpus.into(), q.max_vcpus.into()));
    }
    if mem + memory_mib > q.max_memory_mib {
        return Err(total("MiB of memory", mem, memory_mib, q.max_memory_mib));
    }
    Ok(())
}

/// Inserts a `pending` box after checking the quota (atomically with other creates in the org).
pub async fn create(st: &AppState, org: Uuid, nb: NewBox) -> ApiResult<BoxRow> {
    let mut tx = st.db.begin().await?;
    check_quota(&mut tx, org, nb.vcpus, nb.memory_mib, nb.disk_mib, None).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO boxes (id, org_id, name, snapshot, vcpus, memory_mib, disk_mib, env, labels, runner_selector,
                            state, desired_state, auto_stop_seconds, ttl_seconds, snapshot_id, snapshot_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 'running', $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(org)
    .bind(&nb.name)
    .bind(&nb.snapshot)
    .bind(nb.vcpus)
    .bind(nb.memory_mib)
    .bind(nb.disk_mib)
    .bind(Json(&nb.env))
    .bind(Json(&nb.labels))
    .bind(Json(&nb.runner_selector))
    .bind(nb.auto_stop_seconds)
    .bind(nb.ttl_seconds)
    .bind(nb.snapshot_row.as_ref().map(|s| s.id))
    .bind(nb.snapshot_row.as_ref().and_then(|s| s.digest.clone()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(load(&st.db, id).await?.expect("the box was just inserted"))
}

fn schedule_error(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::NoRunnerMatches(sel) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_runner_matches",
            format!(
                "no ready runner that takes new boxes matches the runner selector {sel}; check the labels, or wait \
                 for such a runner (or for an admin to uncordon one)"
            ),
        )
        .retry_after(30),
        e @ ScheduleError::NoCapacity { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", format!("{e}; retry later or ask for less"))
                .retry_after(10)
        }
        ScheduleError::Db(e) => e.into(),
    }
}

/// Whether a runner's refusal is about the request itself (retrying elsewhere would not help).
/// (A corrupt snapshot image is the same in the bucket for every runner: no other runner is tried either.)
fn is_request_error(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::InvalidArgument | tonic::Code::Unimplemented | tonic::Code::OutOfRange | tonic::Code::DataLoss
    )
}

/// Places a `pending` box: picks runners, reserves, calls CreateBox; on a runner failure releases the reservation
/// and tries the next candidate (at most `placement_attempts` runners). On final failure the box is `error` with the
/// reason, and the error is returned.
pub async fn place(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    let started = std::time::Instant::now();
    let demand = b.demand();
    let mut tried: Vec<Uuid> = Vec::new();
    let mut last: Option<ApiError> = None;
    while tried.len() < st.config.placement_attempts {
        let cands = match scheduler::candidates(&st.db, &st.config, &demand, &tried).await {
            Ok(c) => c,
            Err(e) => {
                last = Some(schedule_error(e));
                break;
            }
        };
        let mut chosen = None;
        for c in cands {
            if scheduler::reserve(&st.db, &st.config, b.id, c.id, &demand, false).await? {
                chosen = Some(c);
                break;
            }
        }
        let Some(c) = chosen else {
            last =
                Some(schedule_error(ScheduleError::NoCapacity { vcpus: demand.vcpus, memory_mib: demand.memory_mib }));
            break;
        };
        tried.push(c.id);
        match create_on_runner(st, b, c.id).await {
            Ok(row) => {
                st.metrics.placement("placed");
                st.metrics.placement_seconds.observe(started.elapsed().as_secs_f64());
                return Ok(row);
            }
            Err(Failure::Request(e)) => {
                fail(st, b.id, &e.body.message).await?;
                st.metrics.placement("rejected");
                return Err(e);
            }
            Err(Failure::Runner(e)) => {
                tracing::warn!(box_id = %b.id, runner = %c.name, "placement failed: {e}");
                st.metrics.placement("runner_failed");
                // Back to pending, off this runner; its heartbeat will get any half-created box destroyed.
                sqlx::query(
                    "UPDATE boxes SET state = 'pending', runner_id = NULL, reserved = false, updated_at = now()
                      WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(b.id)
                .execute(&st.db)
                .await?;
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| ApiError::unavailable("no_capacity", "no runner could take the box"));
    st.metrics.placement(e.code());
    fail(st, b.id, &e.body.message).await?;
    Err(e)
}

enum Failure {
    /// The request is at fault (bad spec): no point trying elsewhere.
    Request(ApiError),
    /// The runner failed or was unreachable.
    Runner(ApiError),
}

async fn create_on_runner(st: &AppState, b: &BoxRow, runner: Uuid) -> Result<BoxRow, Failure> {
    let snapshot = match b.snapshot_id {
        Some(sid) => Some(
            crate::snapshots::load(&st.db, sid)
                .await
                .map_err(|e| Failure::Runner(e.into()))?
                .ok_or_else(|| Failure::Request(ApiError::not_found("snapshot", sid)))?
                .to_ref(),
        ),
        None => None,
    };
    let (_, mut client) = st.runners.for_runner(&st.db, runner).await.map_err(Failure::Runner)?;
    let req = pb::CreateBoxRequest { box_id: b.id.to_string(), spec: Some(b.spec(snapshot)) };
    let info = match client.create_box(request(req, st.config.create_timeout)).await {
        Ok(r) => r.into_inner(),
        Err(s) if is_request_error(&s) => return Err(Failure::Request(s.into())),
        Err(s) => return Err(Failure::Runner(s.into())),
    };
    if info.state() != pb::BoxState::Running {
        return Err(Failure::Runner(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "boot_failed",
            format!("the box did not start on its runner: {}", info.reason),
        )));
    }
    let n = sqlx::query(
        "UPDATE boxes SET state = 'running', started_at = now(), last_activity_at = now(), updated_at = now()
          WHERE id = $1 AND runner_id = $2 AND deleted_at IS NULL",
    )
    .bind(b.id)
    .bind(runner)
    .execute(&st.db)
    .await
    .map_err(|e| Failure::Runner(e.into()))?
    .rows_affected();
    if n == 0 {
        // Deleted while it was being created: take it down again.
        let _ = client.destroy_box(request(pb::BoxRef { box_id: b.id.to_string() }, Duration::from_secs(30))).await;
        return Err(Failure::Request(ApiError::not_found("box", b.id)));
    }
    load(&st.db, b.id)
        .await
        .map_err(|e| Failure::Runner(e.into()))?
        .ok_or(Failure::Request(ApiError::not_found("box", b.id)))
}

async fn fail(st: &AppState, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE boxes SET state = 'error', reason = $2, reserved = false, runner_id = NULL, updated_at = now()
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(reason)
    .execute(&st.db)
    .await?;
    Ok(())
}

/// Starts a stopped box again on the runner that has its disk.
pub async fn start(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    match b.state.as_str() {
        "running" | "starting" | "pending" => {
            sqlx::query("UPDATE boxes SET desired_state = 'running', updated_at = now() WHERE id = $1")
                .bind(b.id)
                .execute(&st.db)
                .await?;
            return Ok(load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()));
        }
        "stopped" => {}
        "error" if b.runner_id.is_none() => {
            // Never placed: try again.
            let mut tx = st.db.begin().await?;
            check_quota(&mut tx, b.org_id, b.vcpus, b.memory_mib, b.disk_mib, Some(b.id)).await?;
            sqlx::query(
                "UPDATE boxes SET state = 'pending', desired_state = 'running', reason = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(b.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return place(st, b).await;
        }
        s => {
            return Err(ApiError::conflict(
                "invalid_state",
                format!("box {} is {s}{}; it cannot be started — delete it and create a new one", b.id, reason(b)),
            ));
        }
    }
    let runner = b.runner_id.ok_or_else(|| ApiError::conflict("invalid_state", "the box has no runner"))?;
    {
        // The quota check and the move to an active state in one transaction (under the org's quota row lock), so
        // concurrent starts and creates cannot pass the check together.
        let mut tx = st.db.begin().await?;
        check_quota(&mut tx, b.org_id, b.vcpus, b.memory_mib, b.disk_mib, Some(b.id)).await?;
        let n = sqlx::query(
            "UPDATE boxes SET desired_state = 'running', state = 'starting', updated_at = now()
              WHERE id = $1 AND state = 'stopped' AND deleted_at IS NULL",
        )
        .bind(b.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(ApiError::conflict(
                "invalid_state",
                format!("box {} is being started or stopped; retry", b.id),
            ));
        }
        tx.commit().await?;
    }
    if !scheduler::reserve(&st.db, &st.config, b.id, runner, &b.demand(), true).await? {
        sqlx::query("UPDATE boxes SET state = 'stopped', updated_at = now() WHERE id = $1")
            .bind(b.id)
            .execute(&st.db)
            .await?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            "the runner that holds this box's disk has no room for it right now (or is not ready); retry later",
        )
        .retry_after(10));
    }
    let started = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        let info = client.start_box(request(pb::BoxRef { box_id: b.id.to_string() }, st.config.create_timeout)).await?;
        if info.get_ref().state() != pb::BoxState::Running {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "boot_failed",
                format!("the box did not start: {}", info.get_ref().reason),
            ));
        }
        sqlx::query(
            "UPDATE boxes SET state = 'running', started_at = now(), last_activity_at = now(), reason = NULL,
                    updated_at = now() WHERE id = $1",
        )
        .bind(b.id)
        .execute(&st.db)
        .await?;
        Ok(())
    }
    .await;
    if let Err(e) = started {
        // Whatever failed, the box is not running: back to stopped, its reservation released.
        sqlx::query(
            "UPDATE boxes SET state = 'stopped', reserved = false, reason = $2, updated_at = now() WHERE id = $1",
        )
        .bind(b.id)
        .bind(&e.body.message)
        .execute(&st.db)
        .await?;
        return Err(e);
    }
    Ok(load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()))
}

fn reason(b: &BoxRow) -> String {
    b.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
}

/// Stops a running box (its disk stays on the runner; `start` boots it again).
pub async fn stop(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    if matches!(b.state.as_str(), "pending" | "starting") {
        return Err(ApiError::conflict(
            "invalid_state",
            format!("box {} is still {}; stop it once it is running", b.id, b.state),
        )
        .retry_after(2));
    }
    sqlx::query("UPDATE boxes SET desired_state = 'stopped', updated_at = now() WHERE id = $1")
        .bind(b.id)
        .execute(&st.db)
        .await?;
    if matches!(b.state.as_str(), "stopped" | "error" | "lost") {
        return Ok(load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()));
    }
    stop_on_runner(st, b, "stopped on request").await?;
    Ok(load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()))
}

/// Calls StopBox and records the result (used by the API and by the reconciler's auto-stop).
pub async fn stop_on_runner(st: &AppState, b: &BoxRow, why: &str) -> ApiResult<()> {
    let runner = b.runner_id.ok_or_else(|| ApiError::conflict("invalid_state", "the box has no runner"))?;
    sqlx::query("UPDATE boxes SET state = 'stopping', updated_at = now() WHERE id = $1 AND state = 'running'")
        .bind(b.id)
        .execute(&st.db)
        .await?;
    let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
    client
        .stop_box(request(pb::StopBoxRequest { box_id: b.id.to_string(), timeout_ms: 10_000 }, Duration::from_secs(60)))
        .await?;
    sqlx::query(
        "UPDATE boxes SET state = 'stopped', reserved = false, stopped_at = now(), reason = $2, updated_at = now()
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(b.id)
    .bind(why)
    .execute(&st.db)
    .await?;
    crate::executions::sync_running(st, b.id, runner, "the box stopped before the process exited").await?;
    Ok(())
}

/// Deletes a box: it disappears from the API at once; the runner destroys it now if reachable, else when it next
/// reports (heartbeat reconciliation).
pub async fn delete(st: &AppState, b: &BoxRow) -> ApiResult<()> {
    sqlx::query(
        "UPDATE boxes SET desired_state = 'deleted', deleted_at = now(), reserved = false, updated_at = now()
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(b.id)
    .execute(&st.db)
    .await?;
    crate::executions::finish_all(&st.db, b.id, "the box was deleted").await?;
    if let Some(runner) = b.runner_id {
        destroy_on_runner(st, b.id, runner).await;
    } else {
        mark_destroyed(&st.db, b.id).await?;
    }
    Ok(())
}

/// Best effort: DestroyBox now; on failure the heartbeat reconciliation finishes the job.
pub async fn destroy_on_runner(st: &AppState, id: Uuid, runner: Uuid) {
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        client.destroy_box(request(pb::BoxRef { box_id: id.to_string() }, Duration::from_secs(30))).await?;
        mark_destroyed(&st.db, id).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::info!(box_id = %id, "destroy deferred to the runner's next heartbeat: {e}");
    }
}

pub async fn mark_destroyed(db: &sqlx::PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET destroyed_at = now() WHERE id = $1 AND destroyed_at IS NULL")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Our name for a runner box state (the API contract's mapping).
pub fn state_name(s: pb::BoxState) -> &'static str {
    boxyard_api::BoxState::from(s).as_str()
}

/// Records activity on a box (postpones its auto-stop).
pub async fn touch(db: &sqlx::PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET last_activity_at = now() WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}
