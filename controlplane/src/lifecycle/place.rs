//! Placement: pick runners (the scheduler), reserve, CreateBox; on a runner's failure release the reservation and
//! try the next candidate; on final failure the box is `error` with the reason.

use axum::http::StatusCode;
use boxyard_proto::runner as pb;
use uuid::Uuid;

use super::{destroy_on_runner, retry_stale};
use crate::error::{ApiError, ApiResult};
use crate::machine::BoxState;
use crate::runners::{request, within};
use crate::scheduler::{self, ScheduleError};
use crate::state::AppState;
use crate::store::boxes::{BoxRow, Change};

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
        ScheduleError::Store(e) => e.into(),
    }
}

/// Whether a runner's refusal is about the request itself (retrying elsewhere would not help).
/// (A corrupt snapshot image is the same in the bucket for every runner: no other runner is tried either.)
fn is_request_error(e: &ApiError) -> bool {
    matches!(e.status, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::NOT_IMPLEMENTED) || e.code() == "snapshot_corrupt"
}

/// Places a `pending` box: picks runners, reserves, calls CreateBox; on a runner failure releases the reservation
/// and tries the next candidate (at most `placement_attempts` runners). On final failure the box is `error` with the
/// reason, and the error is returned.
pub async fn place(st: &AppState, b: &BoxRow) -> ApiResult<BoxRow> {
    let started = std::time::Instant::now();
    let demand = b.demand();
    let mut b = b.clone();
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
        let mut reserved = None;
        for c in cands {
            if let Some(row) = scheduler::reserve(&st.db, &st.config, &b, c.id, &demand, false).await? {
                reserved = Some((c, row));
                break;
            }
        }
        let Some((c, row)) = reserved else {
            last =
                Some(schedule_error(ScheduleError::NoCapacity { vcpus: demand.vcpus, memory_mib: demand.memory_mib }));
            break;
        };
        tried.push(c.id);
        match create_on_runner(st, &row, c.id).await {
            Ok(row) => {
                st.metrics.placement("placed");
                st.metrics.placement_seconds.observe(started.elapsed().as_secs_f64());
                return Ok(row);
            }
            Err(Failure::Request(e)) => {
                st.metrics.placement("rejected");
                fail(st, b.id, &e.body.message).await?;
                return Err(e);
            }
            Err(Failure::Runner(e)) => {
                tracing::warn!(box_id = %b.id, runner = %c.name, "placement failed: {e}");
                st.metrics.placement("runner_failed");
                // Back to pending, off this runner; its heartbeat will get any half-created box destroyed.
                match retry_stale(st, b.id, |cur| {
                    (cur.state == BoxState::Starting && cur.runner_id == Some(c.id))
                        .then(|| Change::to(BoxState::Pending).off_runner())
                })
                .await?
                {
                    Some(cur) if cur.state == BoxState::Running => return Ok(cur),
                    Some(cur) => b = cur,
                    None => return Err(ApiError::not_found("box", b.id)),
                }
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
    let timeout = st.config.create_timeout;
    let info = match within(timeout, client.create_box(request(req, timeout))).await {
        Ok(i) => i,
        Err(e) if is_request_error(&e) => return Err(Failure::Request(e)),
        Err(e) => return Err(Failure::Runner(e)),
    };
    if info.state() != pb::BoxState::Running {
        return Err(Failure::Runner(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "boot_failed",
            format!("the box did not start on its runner: {}", info.reason),
        )));
    }
    let r = retry_stale(st, b.id, |cur| {
        if cur.runner_id != Some(runner) {
            return None;
        }
        match cur.state {
            BoxState::Starting => Some(Change::to(BoxState::Running).started().observed(info.state_version)),
            _ => None,
        }
    })
    .await
    .map_err(Failure::Runner)?;
    match r {
        Some(row) if row.runner_id == Some(runner) && row.state == BoxState::Running => Ok(row),
        Some(row) => Err(Failure::Runner(ApiError::conflict(
            "invalid_state",
            format!("box {} changed while it was created (now {})", row.id, row.state),
        ))),
        None => {
            // Deleted while it was being created: take it down again.
            destroy_on_runner(st, b.id, runner).await;
            Err(Failure::Request(ApiError::not_found("box", b.id)))
        }
    }
}

/// Marks a box that could not be placed as `error` (off any runner), with the reason.
async fn fail(st: &AppState, id: Uuid, reason: &str) -> ApiResult<()> {
    retry_stale(st, id, |cur| {
        (cur.state != BoxState::Running).then(|| Change::to(BoxState::Error).off_runner().reason(reason))
    })
    .await?;
    Ok(())
}
