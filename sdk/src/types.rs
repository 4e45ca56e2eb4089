//! Request and response types of the API (see docs/api.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/boxes`. All fields optional.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateBox {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub runner_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// A box.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BoxInfo {
    pub id: String,
    pub name: Option<String>,
    pub snapshot: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub disk_mib: i64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// pending, starting, running, stopping, stopped, error or lost.
    pub state: String,
    pub desired_state: String,
    pub reason: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
}

/// `POST /v1/boxes/{id}/executions`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecRequest {
    /// argv; empty: the snapshot's default command.
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Keep stdin open for attaches.
    pub stdin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
}

impl ExecRequest {
    /// A command with default settings.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        ExecRequest { command: argv.into_iter().map(Into::into).collect(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TtySize {
    pub rows: u32,
    pub cols: u32,
}

/// An execution.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Execution {
    pub id: String,
    pub box_id: String,
    pub command: Vec<String>,
    /// running, finished or lost.
    pub state: String,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub timed_out: bool,
    pub killed: bool,
    pub error: Option<String>,
    pub output_start: i64,
    pub output_bytes: i64,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// How an execution ended, as the attach's `exit` message says.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ExitResult {
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub killed: bool,
    pub error: Option<String>,
    /// The cursor after the last output byte.
    pub output_end: u64,
}

/// A snapshot.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub org_id: Option<String>,
    /// uploading, verifying, active or failed.
    pub state: String,
    pub reason: Option<String>,
    pub digest: Option<String>,
    pub size_bytes: Option<i64>,
    pub metadata: SnapshotMetadata,
}

/// Defaults for executions in boxes of a snapshot.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SnapshotMetadata {
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// The caller.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Me {
    pub key_id: String,
    pub org_id: String,
    pub org_name: String,
    /// member, admin or platform_admin.
    pub role: String,
}

/// A page of a list.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// What [`crate::Client::run`] returns.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExitResult,
}
