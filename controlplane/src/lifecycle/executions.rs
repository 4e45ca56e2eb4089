//! Execution operations: create (record first, then Exec on the runner, so a crash in between leaves a record and
//! never an orphan), refresh from the runner, kill, signal, resize, and the one place where a runner's view of an
//! execution is mirrored into its record ([`observe`]). Every runner call has a deadline; a read whose runner does
//! not answer in time returns the stored record, marked stale.

use std::collections::BTreeMap;

use boxyard_proto::runner as pb;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::machine::{BoxState, ExecutionState};
use crate::runners::{Client, request, within};
use crate::state::AppState;
use crate::store::boxes::BoxRow;
use crate::store::executions::{self as store, ExecRow, NewExecRow};

/// A new execution (validated by the API layer).
#[derive(Debug, Clone)]
pub struct NewExec {
    /// argv; empty: the snapshot's default command.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Terminal size (rows, cols), if it has one.
    pub tty: Option<(u32, u32)>,
    /// Whether it takes stdin.
    pub stdin: bool,
    /// Timeout.
    pub timeout_ms: Option<u64>,
}

/// An execution read, and whether it may be out of date (its runner did not answer within the deadline).
#[derive(Debug, Clone)]
pub struct Read {
    /// The record.
    pub exec: ExecRow,
    /// The runner did not answer: the record is as last stored.
    pub stale: bool,
}

/// Loads an execution of box `b` (404 for unknown ones).
pub async fn get(st: &AppState, b: &BoxRow, id: Uuid) -> ApiResult<ExecRow> {
    store::get(&st.db, b.org_id, b.id, id).await?.ok_or_else(|| ApiError::not_found("execution", id))
}

/// Requires a running box with a runner.
pub fn runner_of(b: &BoxRow) -> ApiResult<Uuid> {
    match (b.state, b.runner_id) {
        (BoxState::Running, Some(r)) => Ok(r),
        (s, _) => Err(ApiError::conflict(
            "box_not_running",
            format!("box {} is {s}; start it first (POST /v1/boxes/{}/start)", b.id, b.id),
        )),
    }
}

/// A client of the runner of a running box (for the streams the API bridges: attach, files).
pub async fn client_for(st: &AppState, b: &BoxRow) -> ApiResult<Client> {
    let runner = runner_of(b)?;
    Ok(st.runners.for_runner(&st.db, runner).await?.1)
}

/// Records the execution, then starts it on the runner.
pub async fn create(st: &AppState, b: &BoxRow, mut ne: NewExec) -> ApiResult<ExecRow> {
    let runner = runner_of(b)?;
    // The snapshot's defaults for what the execution leaves out (its env is already in the box's).
    if let Some(sid) = b.snapshot_id
        && let Some(s) = crate::snapshots::load(&st.db, sid).await?
    {
        let m = s.metadata.0;
        if ne.command.is_empty() {
            ne.command = m.cmd;
        }
        ne.working_dir = ne.working_dir.or(m.working_dir);
        ne.user = ne.user.or(m.user);
    }
    if ne.command.is_empty() || ne.command[0].is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            boxyard_api::error::codes::NO_COMMAND,
            "the command is empty and the box's snapshot has no default command: give one, [\"program\", \"arg\", ...]",
        ));
    }
    let id = Uuid::now_v7();
    let row = NewExecRow {
        command: &ne.command,
        env: &ne.env,
        working_dir: ne.working_dir.as_deref(),
        user: ne.user.as_deref(),
        tty: ne.tty.is_some(),
        stdin: ne.stdin,
        timeout_ms: ne.timeout_ms,
    };
    store::insert(&st.db, id, b.id, b.org_id, &row).await?;
    let req = pb::ExecRequest {
        box_id: b.id.to_string(),
        execution_id: id.to_string(),
        argv: ne.command,
        env: ne.env.into_iter().collect(),
        working_dir: ne.working_dir.unwrap_or_default(),
        user: ne.user.unwrap_or_default(),
        tty: ne.tty.map(|(rows, cols)| pb::Tty { rows, cols }),
        stdin: ne.stdin,
        timeout_ms: ne.timeout_ms.unwrap_or(0),
        kill_grace_ms: 0,
    };
    let timeout = st.config.runner_call_timeout;
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        within(timeout, client.exec(request(req, timeout))).await
    }
    .await;
    match r {
        Ok(e) => {
            super::touch(st, b.id).await?;
            observe(st, &e).await?;
            get(st, b, id).await
        }
        Err(e) => {
            store::remove(&st.db, id).await?;
            Err(e)
        }
    }
}

/// Mirrors a runner's view of an execution into its record (the only writer of what a runner says of one).
pub async fn observe(st: &AppState, e: &pb::Execution) -> Result<(), sqlx::Error> {
    store::mirror(&st.db, e).await
}

/// Refreshes a running execution from its runner. When the runner does not answer within the deadline the stored
/// record is returned, marked stale.
pub async fn refresh(st: &AppState, b: &BoxRow, x: ExecRow) -> ApiResult<Read> {
    if x.state != ExecutionState::Running {
        return Ok(Read { exec: x, stale: false });
    }
    let Some(runner) = b.runner_id else { return Ok(Read { exec: x, stale: false }) };
    let timeout = st.config.runner_call_timeout;
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        within(timeout, client.get_execution(request(pb::ExecutionRef { execution_id: x.id.to_string() }, timeout)))
            .await
    }
    .await;
    match r {
        Ok(e) => {
            observe(st, &e).await?;
            Ok(Read { exec: get(st, b, x.id).await?, stale: false })
        }
        Err(e) => {
            tracing::debug!(execution = %x.id, "refresh skipped, answering from the record: {e}");
            Ok(Read { exec: x, stale: true })
        }
    }
}

/// Kills a running execution (SIGKILL to its process group) and returns its record.
pub async fn kill(st: &AppState, b: &BoxRow, x: ExecRow) -> ApiResult<ExecRow> {
    if x.state == ExecutionState::Running {
        let runner = runner_of(b)?;
        let (_, mut c) = st.runners.for_runner(&st.db, runner).await?;
        let timeout = st.config.runner_call_timeout;
        let e =
            within(timeout, c.kill_execution(request(pb::ExecutionRef { execution_id: x.id.to_string() }, timeout)))
                .await?;
        observe(st, &e).await?;
    }
    get(st, b, x.id).await
}

/// Sends a signal to a running execution's process group.
pub async fn signal(st: &AppState, b: &BoxRow, x: &ExecRow, signal: String) -> ApiResult<()> {
    let runner = runner_of(b)?;
    let (_, mut c) = st.runners.for_runner(&st.db, runner).await?;
    let timeout = st.config.runner_call_timeout;
    within(timeout, c.signal(request(pb::SignalRequest { execution_id: x.id.to_string(), signal }, timeout))).await?;
    Ok(())
}

/// Resizes a running execution's terminal.
pub async fn resize(st: &AppState, b: &BoxRow, x: &ExecRow, rows: u32, cols: u32) -> ApiResult<()> {
    let runner = runner_of(b)?;
    let (_, mut c) = st.runners.for_runner(&st.db, runner).await?;
    let timeout = st.config.runner_call_timeout;
    let req = pb::ResizeRequest { execution_id: x.id.to_string(), tty: Some(pb::Tty { rows, cols }) };
    within(timeout, c.resize(request(req, timeout))).await?;
    Ok(())
}

/// Brings every running execution of a box up to date from its runner; those the runner cannot tell about end as
/// lost with `why`.
pub async fn sync_running(st: &AppState, box_id: Uuid, runner: Uuid, why: &str) -> Result<(), sqlx::Error> {
    let ids = store::running_of(&st.db, box_id).await?;
    if ids.is_empty() {
        return Ok(());
    }
    if let Ok((_, mut client)) = st.runners.for_runner(&st.db, runner).await {
        let timeout = st.config.runner_call_timeout;
        for id in &ids {
            let r = within(
                timeout,
                client.get_execution(request(pb::ExecutionRef { execution_id: id.to_string() }, timeout)),
            )
            .await;
            if let Ok(e) = r {
                observe(st, &e).await?;
            }
        }
    }
    store::lose_running(&st.db, box_id, why).await
}
