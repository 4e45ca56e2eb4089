//! Executions: `POST /v1/boxes/{id}/executions`, the execution as the API shows it, its list and filters, signals,
//! terminal sizes and the attach's query.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::ExecutionState;

/// The query of `GET /v1/boxes/{id}/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ExecListParams {
    /// Page size, 1 to 200 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(format = Uuid))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Only executions in this state (running, finished, lost).
    #[cfg_attr(feature = "openapi", param(value_type = Option<ExecutionState>))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `POST /v1/boxes/{id}/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    /// argv: the program and its arguments (not run through a shell), at most 4096, the program not empty. Empty or
    /// absent: the snapshot's default command.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::argv))]
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of the process (over the snapshot's and the box's).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::env_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory, absolute, at most 4096 characters (default: the snapshot's, else the user's home, else /).
    #[cfg_attr(feature = "openapi", schema(max_length = 4096, pattern = "^(/[^\\x00]*)?$"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// A user name in the box, a uid, or uid:gid (default root), at most 256 characters. A name the box's
    /// /etc/passwd does not have: 409 failed_precondition.
    #[cfg_attr(feature = "openapi", schema(max_length = 256, pattern = "^([^:\\x00]*|[0-9]{1,9}:[0-9]{1,9})$"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this size (stdout and stderr merge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Keep stdin open for attach clients (default false: stdin is empty).
    #[serde(default)]
    pub stdin: bool,
    /// SIGTERM after this many milliseconds, SIGKILL shortly after; 1 to 31622400000 (366 days).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31622400000i64))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
}

impl CreateExecution {
    /// A command (argv) with default settings.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        CreateExecution { command: argv.into_iter().map(Into::into).collect(), ..Default::default() }
    }
}

/// A terminal size: the `tty` of an execution, and the body of `POST .../resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    /// Lines, 1 to 10000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub rows: u32,
    /// Columns, 1 to 10000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub cols: u32,
}

/// An execution, as every execution endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionView {
    /// The execution's id.
    pub id: Uuid,
    /// The box it runs in.
    pub box_id: Uuid,
    /// Its argv.
    pub command: Vec<String>,
    /// Its own environment (as requested).
    pub env: BTreeMap<String, String>,
    /// Its working directory, if one was requested.
    pub working_dir: Option<String>,
    /// Its user, if one was requested.
    pub user: Option<String>,
    /// Whether it runs on a pseudo-terminal.
    pub tty: bool,
    /// Whether its stdin is open for attaches.
    pub stdin: bool,
    /// Its timeout, if any.
    pub timeout_ms: Option<i64>,
    /// running, finished, or lost (its box stopped, was deleted or was lost before a result was known).
    pub state: ExecutionState,
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process (e.g. "SIGKILL").
    pub signal: Option<String>,
    /// Whether its timeout killed it.
    pub timed_out: bool,
    /// Whether `kill` killed it.
    pub killed: bool,
    /// Why it could not run or finish normally.
    pub error: Option<String>,
    /// Oldest cursor still stored (older output was dropped by retention).
    pub output_start: i64,
    /// Cursor after the last output byte stored so far.
    pub output_bytes: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its result became known.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of executions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionList {
    /// The executions, oldest first.
    pub items: Vec<ExecutionView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/boxes/{id}/executions/{eid}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// A name, upper case, with or without `SIG` ("SIGINT", "INT"), or its number (1 to 31).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::signal))]
    pub signal: String,
}

/// The query of the attach (`GET /v1/boxes/{id}/executions/{eid}/attach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    /// The first output cursor wanted (the last cursor received plus its data length after a cut). Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}
