//! The API's request and response types: those of the contract crate `boxyard-api` (one definition shared with
//! the control plane, see docs/api.md), under the names this SDK has always used where they differ, and what only
//! the SDK returns ([`RunOutput`]).

pub use boxyard_api::error::codes;
pub use boxyard_api::{
    AuditEntry, AuditList, BoxList, BoxState, BoxView, CreateBox, CreateExecution, CreateJoinToken, CreateKey,
    CreateOrg, CreateSnapshot, DesiredState, ErrorBody, ExecutionList, ExecutionState, ExecutionView, ExistingObject,
    ExitResult, JoinTokenCreated, JoinTokenList, JoinTokenView, KeyCreated, KeyList, KeyView, Me, OrgList, OrgView,
    PlatformConfig, Quota, Role, RunnerList, RunnerView, SnapshotList, SnapshotMetadata, SnapshotView, TtySize,
    UnknownState, UploadResult,
};

/// A box (the SDK's name for [`BoxView`]).
pub type BoxInfo = BoxView;

/// An execution (the SDK's name for [`ExecutionView`]).
pub type Execution = ExecutionView;

/// The request that starts an execution (the SDK's name for [`CreateExecution`]; `ExecRequest::new(argv)`).
pub type ExecRequest = CreateExecution;

/// A snapshot (the SDK's name for [`SnapshotView`]).
pub type Snapshot = SnapshotView;

/// What [`crate::Client::run`] returns.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exit: ExitResult,
}
