//! The API's request and response bodies: those of the contract crate `boxyard-api` (their OpenAPI schemas are
//! derived there, with its `openapi` feature), and the conversions from this crate's rows to them.

pub use boxyard_api::{
    AttachParams, AuditEntry, AuditList, AuditParams, BoxList, BoxView, CreateBox, CreateExecution, CreateJoinToken,
    CreateKey, CreateOrg, ExecListParams, ExecutionList, ExecutionView, FilesParams, JoinTokenCreated, JoinTokenList,
    JoinTokenView, KeyCreated, KeyList, KeyView, ListParams, Me, OrgList, OrgView, PlatformConfig, RunnerList,
    RunnerView, SignalBody, TtySize, UploadResult, WaitParam,
};
use uuid::Uuid;

use crate::boxes::BoxRow;
use crate::executions::ExecRow;

/// A state read from the database as its API enum. The columns only ever hold the enum's names; anything else is
/// a bug, logged, and shown as the state that asks for attention (`error`, `lost`).
fn parse_state<T: std::str::FromStr<Err = boxyard_api::UnknownState> + Fallback>(s: &str, what: &str, id: Uuid) -> T {
    s.parse().unwrap_or_else(|e| {
        tracing::error!(%id, "the {what}'s stored state is not one the API knows: {e}");
        T::FALLBACK
    })
}

/// The state shown for a stored state the API does not know.
trait Fallback {
    const FALLBACK: Self;
}

impl Fallback for boxyard_api::BoxState {
    const FALLBACK: Self = boxyard_api::BoxState::Error;
}

impl Fallback for boxyard_api::DesiredState {
    const FALLBACK: Self = boxyard_api::DesiredState::Stopped;
}

impl Fallback for boxyard_api::ExecutionState {
    const FALLBACK: Self = boxyard_api::ExecutionState::Lost;
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
            state: parse_state(&b.state, "box", b.id),
            desired_state: parse_state(&b.desired_state, "box", b.id),
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
            state: parse_state(&x.state, "execution", x.id),
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
