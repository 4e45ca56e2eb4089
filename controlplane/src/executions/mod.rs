//! Executions: the control plane's record of each command run in a box. The runner owns the truth (process, output
//! log, result); this table mirrors it so that lists and finished results survive the runner, and is refreshed from
//! the runner on reads and from heartbeats.

use std::collections::BTreeMap;
use std::time::Duration;

use boxyard_proto::runner as pb;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::boxes::BoxRow;
use crate::error::{ApiError, ApiResult};
use crate::runners::request;
use crate::state::AppState;

pub const SELECT_EXEC: &str = "SELECT id, box_id, org_id, command, env, working_dir, user_name, tty, stdin, timeout_ms,
        state, exit_code, signal, timed_out, killed, error, output_start, output_bytes, created_at, finished_at
        FROM executions";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExecRow {
    pub id: Uuid,
    pub box_id: Uuid,
    pub org_id: Uuid,
    pub command: Json<Vec<String>>,
    pub env: Json<BTreeMap<String, String>>,
    pub working_dir: Option<String>,
    pub user_name: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub timeout_ms: Option<i64>,
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub timed_out: bool,
    pub killed: bool,
    pub error: Option<String>,
    pub output_start: i64,
    pub output_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A new execution (validated by the API layer).
#[derive(Debug, Clone)]
pub struct NewExec {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: Option<(u32, u32)>,
    pub stdin: bool,
    pub timeout_ms: Option<u64>,
}

pub async fn get(st: &AppState, b: &BoxRow, id: Uuid) -> ApiResult<ExecRow> {
    sqlx::query_as(sql!("{SELECT_EXEC} WHERE id = $1 AND box_id = $2 AND org_id = $3"))
        .bind(id)
        .bind(b.id)
        .bind(b.org_id)
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", id))
}

/// Requires a running box with a runner.
pub fn runner_of(b: &BoxRow) -> ApiResult<Uuid> {
    match (b.state.as_str(), b.runner_id) {
        ("running", Some(r)) => Ok(r),
        (s, _) => Err(ApiError::conflict(
            "box_not_running",
            format!("box {} is {s}; start it first (POST /v1/boxes/{}/start)", b.id, b.id),
        )),
    }
}

/// Records the execution, then starts it on the runner (so a crash in between leaves a record, never an orphan).
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
        return Err(ApiError::invalid(
            "command must name a program: [\"program\", \"arg\", ...] (the box's snapshot has no default command)",
        ));
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO executions (id, box_id, org_id, command, env, working_dir, user_name, tty, stdin, timeout_ms, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running')",
    )
    .bind(id)
    .bind(b.id)
    .bind(b.org_id)
    .bind(Json(&ne.command))
    .bind(Json(&ne.env))
    .bind(&ne.working_dir)
    .bind(&ne.user)
    .bind(ne.tty.is_some())
    .bind(ne.stdin)
    .bind(ne.timeout_ms.map(|t| t as i64))
    .execute(&st.db)
    .await?;
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
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        Ok::<_, ApiError>(client.exec(request(req, Duration::from_secs(60))).await?.into_inner())
    }
    .await;
    match r {
        Ok(e) => {
            crate::boxes::touch(&st.db, b.id).await?;
            apply(&st.db, &e).await?;
            get(st, b, id).await
        }
        Err(e) => {
            sqlx::query("DELETE FROM executions WHERE id = $1").bind(id).execute(&st.db).await?;
            Err(e)
        }
    }
}

/// Mirrors a runner's view of an execution into its record.
pub async fn apply(db: &sqlx::PgPool, e: &pb::Execution) -> Result<(), sqlx::Error> {
    let Ok(id) = Uuid::parse_str(&e.execution_id) else { return Ok(()) };
    if e.state() == pb::ExecutionState::Finished {
        let r = e.result.clone().unwrap_or_default();
        let (code, signal) = match r.outcome {
            Some(pb::execution_result::Outcome::ExitCode(c)) => (Some(c), None),
            Some(pb::execution_result::Outcome::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        sqlx::query(
            "UPDATE executions SET state = 'finished', exit_code = $2, signal = $3, timed_out = $4, killed = $5,
                    error = NULLIF($6, ''), output_start = $7, output_bytes = $8, finished_at = coalesce(finished_at, now())
              WHERE id = $1 AND state <> 'finished'",
        )
        .bind(id)
        .bind(code)
        .bind(signal)
        .bind(r.timed_out)
        .bind(r.killed)
        .bind(&r.error)
        .bind(e.output_start as i64)
        .bind(e.output_end as i64)
        .execute(db)
        .await?;
    } else {
        sqlx::query("UPDATE executions SET output_start = $2, output_bytes = $3 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .bind(e.output_start as i64)
            .bind(e.output_end as i64)
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Refreshes a running execution from its runner (best effort: the record is returned as is if the runner is away).
pub async fn refresh(st: &AppState, b: &BoxRow, x: ExecRow) -> ApiResult<ExecRow> {
    if x.state != "running" {
        return Ok(x);
    }
    let Some(runner) = b.runner_id else { return Ok(x) };
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        let e = client
            .get_execution(request(pb::ExecutionRef { execution_id: x.id.to_string() }, Duration::from_secs(10)))
            .await?;
        Ok::<_, ApiError>(e.into_inner())
    }
    .await;
    match r {
        Ok(e) => {
            apply(&st.db, &e).await?;
            get(st, b, x.id).await
        }
        Err(e) => {
            tracing::debug!(execution = %x.id, "refresh skipped: {e}");
            Ok(x)
        }
    }
}

/// Ends every running execution of a box with `why` (its box stopped, was deleted or was lost).
pub async fn finish_all(db: &sqlx::PgPool, box_id: Uuid, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE executions SET state = 'lost', error = $2, finished_at = now() WHERE box_id = $1 AND state = 'running'",
    )
    .bind(box_id)
    .bind(why)
    .execute(db)
    .await?;
    Ok(())
}

/// Brings every running execution of a box up to date from its runner; those the runner cannot tell about end with
/// `why`.
pub async fn sync_running(st: &AppState, box_id: Uuid, runner: Uuid, why: &str) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM executions WHERE box_id = $1 AND state = 'running'")
        .bind(box_id)
        .fetch_all(&st.db)
        .await?;
    if ids.is_empty() {
        return Ok(());
    }
    if let Ok((_, mut client)) = st.runners.for_runner(&st.db, runner).await {
        for id in &ids {
            let r = client
                .get_execution(request(pb::ExecutionRef { execution_id: id.to_string() }, Duration::from_secs(10)))
                .await;
            if let Ok(e) = r {
                apply(&st.db, e.get_ref()).await?;
            }
        }
    }
    finish_all(&st.db, box_id, why).await
}
