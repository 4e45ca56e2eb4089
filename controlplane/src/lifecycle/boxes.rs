//! Box lifecycle operations: create (quota + insert), place (scheduler + CreateBox, with fallback to the next
//! runner), start, stop, delete, lose. The API handlers and the reconciler call these; each decides the next state
//! and writes it through the store, which checks the edge and the row's generation.

use axum::http::StatusCode;
use boxyard_proto::runner as pb;
use uuid::Uuid;

use super::place::place;
use super::{destroy_on_runner, retry_stale};
use crate::error::{ApiError, ApiResult};
use crate::machine::{BoxState, DesiredState};
use crate::runners::{request, within};
use crate::scheduler::{self, Demand};
use crate::state::AppState;
use crate::store::boxes::{self as store, BoxRow, Change, NewBoxRow};
use crate::store::{StoreError, executions as exec_store, orgs};

impl BoxRow {
    /// What the box needs from a runner.
    pub fn demand(&self) -> Demand {
        Demand {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            selector: serde_json::to_value(&self.runner_selector.0).unwrap_or_default(),
            snapshot: self.snapshot_digest.clone(),
        }
    }

    /// The spec the runner gets for this box.
    pub(super) fn spec(&self, snapshot: Option<pb::SnapshotRef>) -> pb::BoxSpec {
        pb::BoxSpec {
            root: snapshot.map(pb::box_spec::Root::Snapshot),
            vcpus: self.vcpus as u32,
            memory_mib: self.memory_mib as u32,
            disk_mib: self.disk_mib as u64,
            env: self.env.0.clone().into_iter().collect(),
        }
    }

    fn reason_suffix(&self) -> String {
        self.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    }
}

/// What a new box asks for (validated by the API layer).
#[derive(Debug, Clone)]
pub struct NewBox {
    /// The row to insert.
    pub row: NewBoxRow,
}

/// Loads a box of `org` (404 for other orgs' and deleted boxes).
pub async fn get(st: &AppState, org: Uuid, id: Uuid) -> ApiResult<BoxRow> {
    store::get(&st.db, org, id).await?.ok_or_else(|| ApiError::not_found("box", id))
}

/// Checks the org's quota for one more active box of this size (inside `tx`, which then holds the org's quota row).
async fn check_quota(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    org: Uuid,
    vcpus: i32,
    memory_mib: i64,
    disk_mib: i64,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let q = orgs::lock_quota(tx, org).await?;
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
    let (n, cpu, mem) = store::active_usage(tx, org, except).await?;
    let total = |what: String| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!("{what}. Stop or delete boxes, or ask an admin to raise the quota"),
        )
    };
    if n + 1 > q.max_boxes.into() {
        let max = q.max_boxes;
        return Err(total(format!(
            "the org's quota allows at most {max} active {}, and {n} {} active",
            if max == 1 { "box" } else { "boxes" },
            if n == 1 { "is" } else { "are" }
        )));
    }
    if cpu + i64::from(vcpus) > q.max_vcpus.into() {
        return Err(total(format!(
            "the org's quota allows {} vCPUs across its active boxes; {cpu} are in use and this box needs {vcpus}",
            q.max_vcpus
        )));
    }
    if mem + memory_mib > q.max_memory_mib {
        return Err(total(format!(
            "the org's quota allows {} MiB of memory across its active boxes; {mem} MiB are in use and this box \
             needs {memory_mib} MiB",
            q.max_memory_mib
        )));
    }
    Ok(())
}

/// Inserts a `pending` box after checking the quota (atomically with other creates in the org).
pub async fn create(st: &AppState, org: Uuid, nb: NewBox) -> ApiResult<BoxRow> {
    let r = &nb.row;
    let mut tx = st.db.begin().await?;
    check_quota(&mut tx, org, r.vcpus, r.memory_mib, r.disk_mib, None).await?;
    let id = store::insert(&mut tx, org, r).await?;
    let row = store::load(&mut *tx, id).await?.ok_or_else(|| ApiError::internal("a box vanished as it was created"))?;
    tx.commit().await?;
    Ok(row)
}

/// Removes a box whose create failed as a whole, so that a client told "failed" never finds it later. If even
/// that fails, the client is told the box may exist (and to delete it), not the placement's error.
pub async fn discard_failed_create(st: &AppState, id: Uuid, e: ApiError) -> ApiError {
    match store::discard(&st.db, id).await {
        Ok(()) => e,
        Err(db) => {
            tracing::error!(box_id = %id, "cannot remove a box whose create failed: {db}");
            ApiError::unavailable(
                "database_unavailable",
                format!(
                    "the box could not be created ({}), and its record could not be removed ({db}); \
                     delete box {id} if it is listed, then retry",
                    e.body.message
                ),
            )
        }
    }
}

/// Starts a stopped box again on the runner that has its disk (or places again a box that never was).
pub async fn start(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    match b.state {
        BoxState::Running | BoxState::Starting | BoxState::Pending => {
            store::set_desired(&st.db, b.id, DesiredState::Running).await?;
            return Ok(store::load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()));
        }
        BoxState::Stopped => {}
        BoxState::Error if b.runner_id.is_none() => {
            // Never placed: try again.
            let mut tx = st.db.begin().await?;
            check_quota(&mut tx, b.org_id, b.vcpus, b.memory_mib, b.disk_mib, Some(b.id)).await?;
            store::set_desired(&mut *tx, b.id, DesiredState::Running).await?;
            let row = store::transition(&mut *tx, b, Change::to(BoxState::Pending).clear_reason()).await?;
            tx.commit().await?;
            return place(st, &row).await;
        }
        s => {
            return Err(ApiError::conflict(
                "invalid_state",
                format!(
                    "box {} is {s}{}; it cannot be started — delete it and create a new one",
                    b.id,
                    b.reason_suffix()
                ),
            ));
        }
    }
    let runner = b.runner_id.ok_or_else(|| ApiError::conflict("invalid_state", "the box has no runner"))?;
    // The quota check and the move to an active state in one transaction (under the org's quota row lock), so
    // concurrent starts and creates cannot pass the check together.
    let starting = {
        let mut tx = st.db.begin().await?;
        check_quota(&mut tx, b.org_id, b.vcpus, b.memory_mib, b.disk_mib, Some(b.id)).await?;
        store::set_desired(&mut *tx, b.id, DesiredState::Running).await?;
        let row = match store::transition(&mut *tx, b, Change::to(BoxState::Starting)).await {
            Ok(r) => r,
            Err(StoreError::Stale { .. }) => {
                return Err(ApiError::conflict(
                    "invalid_state",
                    format!("box {} is being started or stopped; retry", b.id),
                )
                .retry_after(1));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        row
    };
    let Some(reserved) = scheduler::reserve(&st.db, &st.config, &starting, runner, &b.demand(), true).await? else {
        retry_stale(st, b.id, |cur| (cur.state == BoxState::Starting).then(|| Change::to(BoxState::Stopped))).await?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            "the runner that holds this box's disk has no room for it right now (or is not ready); retry later",
        )
        .retry_after(10));
    };
    let timeout = st.config.create_timeout;
    let started = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        let info = within(timeout, client.start_box(request(pb::BoxRef { box_id: b.id.to_string() }, timeout))).await?;
        if info.state() != pb::BoxState::Running {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "boot_failed",
                format!("the box did not start: {}", info.reason),
            ));
        }
        Ok(info.state_version)
    }
    .await;
    let r = match started {
        Ok(version) => {
            retry_stale(st, b.id, |cur| {
                (cur.state == BoxState::Starting)
                    .then(|| Change::to(BoxState::Running).started().clear_reason().observed(version))
            })
            .await
        }
        // Whatever failed, the box is not running: back to stopped, its reservation released (if the runner did
        // boot it after all, its next report says so).
        Err(e) => {
            retry_stale(st, b.id, |cur| {
                (cur.state == BoxState::Starting).then(|| Change::to(BoxState::Stopped).reason(&e.body.message))
            })
            .await?;
            return Err(e);
        }
    }?;
    Ok(r.unwrap_or(reserved))
}

/// Stops a running box (its disk stays on the runner; `start` boots it again).
pub async fn stop(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    if matches!(b.state, BoxState::Pending | BoxState::Starting) {
        return Err(ApiError::conflict(
            "invalid_state",
            format!("box {} is still {}; stop it once it is running", b.id, b.state),
        )
        .retry_after(2));
    }
    store::set_desired(&st.db, b.id, DesiredState::Stopped).await?;
    if matches!(b.state, BoxState::Stopped | BoxState::Error | BoxState::Lost) {
        return Ok(store::load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()));
    }
    stop_on_runner(st, b, "stopped on request").await?;
    Ok(store::load(&st.db, b.id).await?.unwrap_or_else(|| b.clone()))
}

/// Calls StopBox and records the result (used by the API and by the reconciler's auto-stop).
pub async fn stop_on_runner(st: &AppState, b: &BoxRow, why: &str) -> ApiResult<()> {
    let runner = b.runner_id.ok_or_else(|| ApiError::conflict("invalid_state", "the box has no runner"))?;
    if b.state == BoxState::Running {
        retry_stale(st, b.id, |cur| (cur.state == BoxState::Running).then(|| Change::to(BoxState::Stopping))).await?;
    }
    let timeout = st.config.stop_timeout;
    let stopped = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        within(
            timeout,
            client.stop_box(request(pb::StopBoxRequest { box_id: b.id.to_string(), timeout_ms: 10_000 }, timeout)),
        )
        .await
    }
    .await;
    let info = match stopped {
        Ok(info) => info,
        Err(e) => {
            // Not known to be stopping: back to running, so that the reconciler tries again (desired: stopped). If
            // the runner did get the stop, its next report (a newer version) says so.
            retry_stale(st, b.id, |cur| (cur.state == BoxState::Stopping).then(|| Change::to(BoxState::Running)))
                .await?;
            return Err(e);
        }
    };
    retry_stale(st, b.id, |cur| {
        matches!(cur.state, BoxState::Running | BoxState::Stopping)
            .then(|| Change::to(BoxState::Stopped).stopped().reason(why).observed(info.state_version))
    })
    .await?;
    super::executions::sync_running(st, b.id, runner, "the box stopped before the process exited").await?;
    Ok(())
}

/// Deletes a box: it disappears from the API at once; the runner destroys it now if reachable, else when it next
/// reports (heartbeat reconciliation).
pub async fn delete(st: &AppState, b: &BoxRow) -> ApiResult<()> {
    store::mark_deleted(&st.db, b.id).await?;
    exec_store::lose_running(&st.db, b.id, "the box was deleted").await?;
    if let Some(runner) = b.runner_id {
        destroy_on_runner(st, b.id, runner).await;
    } else {
        store::mark_destroyed(&st.db, b.id).await?;
    }
    Ok(())
}

/// Marks a box lost with `reason` (its runner went silent, or no longer has it): its reservation is released, its
/// running executions end as lost, and its observed version is reset so that whatever its runner reports when it
/// comes back wins.
pub async fn lose(st: &AppState, b: &BoxRow, reason: &str) -> ApiResult<()> {
    let r = retry_stale(st, b.id, |cur| {
        (cur.state != BoxState::Lost && cur.state != BoxState::Pending && cur.runner_id == b.runner_id)
            .then(|| Change::to(BoxState::Lost).reason(reason).observed(0))
    })
    .await?;
    if r.is_some_and(|r| r.state == BoxState::Lost) {
        exec_store::lose_running(&st.db, b.id, reason).await?;
    }
    Ok(())
}

/// A placement whose replica died half way. A box that never ran is placed again from scratch; a stopped box that
/// was being started again goes back to `stopped` on its runner (its disk is there; the user may start it again).
pub async fn recover_abandoned(st: &AppState, b: &BoxRow) -> ApiResult<()> {
    if b.started_at.is_some() && b.runner_id.is_some() {
        tracing::info!(box_id = %b.id, "a start of this box was abandoned: back to stopped");
        store::transition(&st.db, b, Change::to(BoxState::Stopped).reason("a start was interrupted; start it again"))
            .await?;
        return Ok(());
    }
    tracing::info!(box_id = %b.id, "placing a box whose placement was abandoned");
    let row = store::transition(&st.db, b, Change::to(BoxState::Pending).off_runner()).await?;
    let st = st.clone();
    tokio::spawn(async move {
        let _ = place(&st, &row).await;
    });
    Ok(())
}
