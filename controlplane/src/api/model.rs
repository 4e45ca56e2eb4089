//! The API's request and response bodies: those of the contract crate `boxyard-api` (their OpenAPI schemas are
//! derived there, with its `openapi` feature), and the conversions from this crate's rows to them.

pub use boxyard_api::{
    AttachParams, AuditEntry, AuditList, AuditParams, BoxList, BoxView, CreateBox, CreateExecution, CreateJoinToken,
    CreateKey, CreateOrg, ExecListParams, ExecutionList, ExecutionView, FilesParams, JoinTokenCreated, JoinTokenList,
    JoinTokenView, KeyCreated, KeyList, KeyView, ListParams, Me, OrgList, OrgView, PlatformConfig, RunnerList,
    RunnerView, SignalBody, TtySize, UploadResult, WaitParam,
};

use crate::store::boxes::BoxRow;
use crate::store::executions::ExecRow;

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
            state: b.state,
            desired_state: b.desired_state,
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
            state: x.state,
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
