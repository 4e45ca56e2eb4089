//! The runner's configuration (built by the `serve` command from flags and environment).

use std::path::PathBuf;
use std::time::Duration;

use crate::execlog::LogConfig;
use crate::launch::GuestImage;

/// How long one call to a guest agent may take unless configured (`--agent-timeout`).
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the runner's boxes and executions are configured with.
#[derive(Clone)]
pub struct RunnerConfig {
    /// Root of everything the runner keeps: boxes, their disks, executions and their logs.
    pub state_dir: PathBuf,
    /// Guest kernel and initramfs for real VMs.
    pub guest: GuestImage,
    /// Root image of boxes whose spec names none.
    pub default_root_image: Option<PathBuf>,
    /// Extra kernel command-line words for every VM.
    pub kernel_args: Vec<String>,
    /// How long a booting box may take until its guest agent answers.
    pub boot_timeout: Duration,
    /// Segment size and retention cap of every execution log.
    pub log: LogConfig,
    /// How long the log and result of a finished execution are kept (default 24 h).
    pub finished_ttl: Duration,
    /// How often finished executions are checked against `finished_ttl`.
    pub gc_interval: Duration,
    /// Where snapshot images come from; None: boxes cannot boot from snapshots.
    pub snapshots: Option<std::sync::Arc<crate::snapshots::SnapshotStore>>,
    /// How long one call to a guest agent may take before it fails as not answering (default 10 s).
    pub agent_timeout: Duration,
    /// The execution logs' and records' storage: failure counter and (tests) injected faults.
    pub storage: std::sync::Arc<crate::storage::Storage>,
}

impl RunnerConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: PathBuf) -> Self {
        RunnerConfig {
            state_dir,
            guest: GuestImage::from_dir(&GuestImage::default_dir()),
            default_root_image: None,
            kernel_args: Vec::new(),
            boot_timeout: Duration::from_secs(60),
            log: LogConfig::default(),
            finished_ttl: Duration::from_secs(24 * 3600),
            gc_interval: Duration::from_secs(60),
            snapshots: None,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            storage: Default::default(),
        }
    }

    /// The state directory's paths.
    pub fn paths(&self) -> crate::paths::StatePaths {
        crate::paths::StatePaths::new(&self.state_dir)
    }
}
