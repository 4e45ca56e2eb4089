//! The API's request and response bodies (their OpenAPI schemas are derived from these types).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Role;
use crate::store::boxes::BoxRow;
use crate::store::executions::ExecRow;

/// `POST /v1/boxes`. Every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBox {
    /// A label for humans (not unique).
    pub name: Option<String>,
    /// The snapshot to boot (absent: the runner's default image).
    pub snapshot: Option<String>,
    /// Default 1.
    pub vcpus: Option<i64>,
    /// Default 512.
    pub memory_mib: Option<i64>,
    /// The box's writable disk. Default 1024.
    pub disk_mib: Option<i64>,
    /// Environment for every execution in the box.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Your labels, returned as given and usable as a list filter.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Place the box only on runners that have all these labels.
    #[serde(default)]
    pub runner_selector: BTreeMap<String, String>,
    /// Stop the box after this many seconds without activity (running execution, attach, output).
    pub auto_stop_seconds: Option<i64>,
    /// Delete the box this many seconds after its creation.
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitParam {
    /// Wait until the box runs (default true). false: answer 202 at once with the box `pending`.
    pub wait: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BoxView {
    pub id: Uuid,
    pub name: Option<String>,
    pub snapshot: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub disk_mib: i64,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub runner_selector: BTreeMap<String, String>,
    /// pending, starting, running, stopping, stopped, error or lost.
    pub state: String,
    /// running, stopped or deleted.
    pub desired_state: String,
    /// Why the box is in its state (error, lost, stopped by the platform).
    pub reason: Option<String>,
    /// The runner's id (platform-internal; useful in support requests).
    pub runner_id: Option<Uuid>,
    pub auto_stop_seconds: Option<i32>,
    pub ttl_seconds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
}

impl From<BoxRow> for BoxView {
    fn from(b: BoxRow) -> Self {
        BoxView {
            id: b.id,
            name: b.name,
            snapshot: b.snapshot,
            vcpus: b.vcpus,
            memory_mib: b.memory_mib,
            disk_mib: b.disk_mib,
            env: b.env.0,
            labels: b.labels.0,
            runner_selector: b.runner_selector.0,
            state: b.state.to_string(),
            desired_state: b.desired_state.to_string(),
            reason: b.reason,
            runner_id: b.runner_id,
            auto_stop_seconds: b.auto_stop_seconds,
            ttl_seconds: b.ttl_seconds,
            created_at: b.created_at,
            updated_at: b.updated_at,
            started_at: b.started_at,
            stopped_at: b.stopped_at,
            last_activity_at: b.last_activity_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1..=200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only boxes in this state.
    pub state: Option<String>,
    /// Only boxes with this label, as `key=value`.
    pub label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BoxList {
    pub items: Vec<BoxView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExecListParams {
    /// Page size, 1..=200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only executions in this state (running, finished, lost).
    pub state: Option<String>,
}

/// `POST /v1/boxes/{id}/executions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    /// argv: the program and its arguments (not run through a shell). Empty or absent: the snapshot's default.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    /// A user name in the box, a uid, or uid:gid (default root).
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this size (stdout and stderr merge).
    pub tty: Option<TtySize>,
    /// Keep stdin open for attach clients (default false: stdin is empty).
    #[serde(default)]
    pub stdin: bool,
    /// SIGTERM after this many milliseconds, SIGKILL shortly after.
    pub timeout_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub rows: u32,
    pub cols: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    pub id: Uuid,
    pub box_id: Uuid,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub timeout_ms: Option<i64>,
    /// running, finished, or lost (its box stopped, was deleted or was lost before a result was known).
    pub state: String,
    pub exit_code: Option<i32>,
    /// The signal that killed the process (e.g. "SIGKILL").
    pub signal: Option<String>,
    pub timed_out: bool,
    pub killed: bool,
    pub error: Option<String>,
    /// Oldest cursor still stored (older output was dropped by retention).
    pub output_start: i64,
    /// Cursor after the last output byte stored so far.
    pub output_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ExecRow> for ExecutionView {
    fn from(x: ExecRow) -> Self {
        ExecutionView {
            id: x.id,
            box_id: x.box_id,
            command: x.command.0,
            env: x.env.0,
            working_dir: x.working_dir,
            user: x.user_name,
            tty: x.tty,
            stdin: x.stdin,
            timeout_ms: x.timeout_ms,
            state: x.state.to_string(),
            exit_code: x.exit_code,
            signal: x.signal,
            timed_out: x.timed_out,
            killed: x.killed,
            error: x.error,
            output_start: x.output_start,
            output_bytes: x.output_bytes,
            created_at: x.created_at,
            finished_at: x.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    pub items: Vec<ExecutionView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// A name ("SIGINT", "INT") or a number.
    pub signal: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FilesParams {
    /// Upload: the absolute directory to unpack into. Download: the absolute path of a file or directory.
    pub path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadResult {
    pub bytes: u64,
    pub entries: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    /// The first output cursor wanted (the last cursor received plus its data length after a cut). Default 0.
    pub cursor: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub key_id: Uuid,
    pub org_id: Uuid,
    pub org_name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformConfig {
    pub version: String,
    pub default_vcpus: u32,
    pub default_memory_mib: u64,
    pub default_disk_mib: u64,
    /// The caller's org quota.
    pub quota: crate::config::Quota,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// member (default) or admin. Platform admins may also create platform_admin keys in the platform org.
    pub role: Option<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// The key's visible prefix.
    pub prefix: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret key. Shown once: store it now.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Unique: [a-z0-9][a-z0-9-]*, at most 63 bytes.
    pub name: String,
    /// Defaults to the platform's default quota.
    pub quota: Option<crate::config::Quota>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub quota: crate::config::Quota,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgList {
    pub items: Vec<OrgView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerView {
    pub id: Uuid,
    pub name: String,
    pub address: String,
    /// ready, unresponsive or lost.
    pub state: String,
    pub draining: bool,
    pub cordoned: bool,
    pub labels: BTreeMap<String, String>,
    pub capacity_vcpus: i32,
    pub capacity_memory_mib: i64,
    pub capacity_disk_mib: i64,
    /// Reserved by boxes placed there.
    pub allocated_vcpus: i64,
    pub allocated_memory_mib: i64,
    pub boxes: i32,
    pub running_boxes: i32,
    pub version: String,
    pub backend: String,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunnerList {
    pub items: Vec<RunnerView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    #[serde(default)]
    pub description: String,
    /// Lifetime in seconds (default 86400, at most 30 days).
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenView {
    pub id: Uuid,
    pub prefix: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub uses: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenCreated {
    #[serde(flatten)]
    pub token: JoinTokenView,
    /// Pass to `boxyard-runner serve --join-token`. Shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinTokenList {
    pub items: Vec<JoinTokenView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_key: Option<Uuid>,
    pub actor_org: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub items: Vec<AuditEntry>,
}
