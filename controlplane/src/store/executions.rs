//! The `executions` table: every statement that reads or writes it. The runner owns the truth about an execution
//! (process, output log, result); these rows mirror it so that lists and finished results outlive the runner.

use std::collections::BTreeMap;

use boxyard_proto::runner as pb;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::machine::ExecutionState;

/// The columns of an [`ExecRow`].
pub const SELECT_EXEC: &str = "SELECT id, box_id, org_id, command, env, working_dir, user_name, tty, stdin,
        timeout_ms, state, exit_code, signal, timed_out, killed, error, output_start, output_bytes, created_at,
        finished_at FROM executions";

/// An execution as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExecRow {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Its box.
    pub box_id: Uuid,
    /// Its box's org.
    pub org_id: Uuid,
    /// argv.
    pub command: Json<Vec<String>>,
    /// Extra environment.
    pub env: Json<BTreeMap<String, String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User it runs as.
    pub user_name: Option<String>,
    /// Whether it has a terminal.
    pub tty: bool,
    /// Whether it takes stdin.
    pub stdin: bool,
    /// Its timeout.
    pub timeout_ms: Option<i64>,
    /// Its state.
    #[sqlx(try_from = "String")]
    pub state: ExecutionState,
    /// Exit code, once exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it.
    pub signal: Option<String>,
    /// Ended by its timeout.
    pub timed_out: bool,
    /// Ended by a kill request.
    pub killed: bool,
    /// Why it could not run or why its result is unknown.
    pub error: Option<String>,
    /// First cursor still retained.
    pub output_start: i64,
    /// Cursor after the last byte (bytes of output so far).
    pub output_bytes: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// End time.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a new execution row records.
#[derive(Debug, Clone)]
pub struct NewExecRow<'a> {
    /// argv.
    pub command: &'a [String],
    /// Extra environment.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<&'a str>,
    /// User.
    pub user: Option<&'a str>,
    /// Terminal.
    pub tty: bool,
    /// Stdin.
    pub stdin: bool,
    /// Timeout.
    pub timeout_ms: Option<u64>,
}

/// An execution of box `box_id` in `org`.
pub async fn get(db: &PgPool, org: Uuid, box_id: Uuid, id: Uuid) -> Result<Option<ExecRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_EXEC} WHERE id = $1 AND box_id = $2 AND org_id = $3"))
        .bind(id)
        .bind(box_id)
        .bind(org)
        .fetch_optional(db)
        .await
}

/// A page of a box's executions, oldest first.
pub async fn list(
    db: &PgPool,
    org: Uuid,
    box_id: Uuid,
    after: Option<Uuid>,
    state: Option<ExecutionState>,
    limit: i64,
) -> Result<Vec<ExecRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "{SELECT_EXEC} WHERE box_id = $1 AND org_id = $2 AND ($3::uuid IS NULL OR id > $3)
            AND ($4::text IS NULL OR state = $4) ORDER BY id LIMIT $5"
    ))
    .bind(box_id)
    .bind(org)
    .bind(after)
    .bind(state.map(ExecutionState::as_str))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records a new `running` execution (before the runner is asked to start it).
pub async fn insert(db: &PgPool, id: Uuid, box_id: Uuid, org: Uuid, e: &NewExecRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO executions (id, box_id, org_id, command, env, working_dir, user_name, tty, stdin, timeout_ms, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running')",
    )
    .bind(id)
    .bind(box_id)
    .bind(org)
    .bind(Json(e.command))
    .bind(Json(e.env))
    .bind(e.working_dir)
    .bind(e.user)
    .bind(e.tty)
    .bind(e.stdin)
    .bind(e.timeout_ms.map(|t| t.min(i64::MAX as u64) as i64))
    .execute(db)
    .await?;
    Ok(())
}

/// Removes an execution the runner never started.
pub async fn remove(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM executions WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// Mirrors a runner's view of an execution: its output range while it runs; its result once it finished (running
/// or lost → finished; a finished record is final).
pub async fn mirror(db: &PgPool, e: &pb::Execution) -> Result<(), sqlx::Error> {
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

/// Ends every running execution of a box as `lost` with `why`.
pub async fn lose_running(db: &PgPool, box_id: Uuid, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE executions SET state = 'lost', error = $2, finished_at = now() WHERE box_id = $1 AND state = 'running'",
    )
    .bind(box_id)
    .bind(why)
    .execute(db)
    .await?;
    Ok(())
}

/// The running executions of a box.
pub async fn running_of(db: &PgPool, box_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM executions WHERE box_id = $1 AND state = 'running'")
        .bind(box_id)
        .fetch_all(db)
        .await
}

/// Executions of boxes on `runner` whose record is not final (running, or lost while the runner was away).
pub async fn unsettled_on(db: &PgPool, runner: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT e.id FROM executions e JOIN boxes b ON b.id = e.box_id
          WHERE b.runner_id = $1 AND e.state IN ('running', 'lost')",
    )
    .bind(runner)
    .fetch_all(db)
    .await
}

/// Forgets ended executions older than `keep_secs`.
pub async fn collect(db: &PgPool, keep_secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM executions WHERE state <> 'running' AND finished_at < now() - make_interval(secs => $1)")
        .bind(keep_secs)
        .execute(db)
        .await?;
    Ok(())
}
