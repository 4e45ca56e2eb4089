//! The control plane's tunables (set from the command line in `main.rs`; defaults suit production).

use std::time::Duration;

/// An org's limits (defined by the API contract; its `Default` is the platform's default quota).
pub use boxyard_api::Quota;

/// Timings, overcommit, retention and defaults of one control-plane replica (every replica should run with the same).
#[derive(Debug, Clone)]
pub struct Config {
    /// How often runners send heartbeats (told to them at registration and in every heartbeat answer).
    pub heartbeat_interval: Duration,
    /// No heartbeat for this long: the runner is `unresponsive` (no new boxes).
    pub runner_unresponsive_after: Duration,
    /// No heartbeat for this long: the runner is `lost`, and so are its boxes.
    pub runner_lost_after: Duration,
    /// How often the reconciler leader runs a pass.
    pub reconcile_interval: Duration,
    /// A box stuck in `pending` or `starting` for this long (its placing replica died) is placed again.
    pub placement_stale_after: Duration,
    /// How many vCPUs the scheduler places per host CPU of a runner (1.0: no overcommit).
    pub cpu_overcommit: f64,
    /// How much box memory the scheduler places per byte of a runner's memory (1.0: no overcommit).
    pub memory_overcommit: f64,
    /// Runners tried for one placement before giving up.
    pub placement_attempts: usize,
    /// How long a runner gets to create and boot a box.
    pub create_timeout: Duration,
    /// The deadline of every other call to a runner (reads, executions, signals, files' first answer). A runner
    /// that does not answer in time: reads answer from the stored record (marked stale), writes answer
    /// `503 runner_unavailable` with `retry_after`.
    pub runner_call_timeout: Duration,
    /// How long a runner gets to stop a box (its guest powers off, its executions end).
    pub stop_timeout: Duration,
    /// Finished execution records (and deleted boxes) are kept this long.
    pub record_retention: Duration,
    /// Idempotency keys are remembered this long.
    pub idempotency_ttl: Duration,
    /// Quota given to new orgs.
    pub default_quota: Quota,
    /// vCPUs of a new box whose request names none.
    pub default_vcpus: u32,
    /// Memory (MiB) of a new box whose request names none.
    pub default_memory_mib: u64,
    /// Writable disk size (MiB) of a new box whose request names none.
    pub default_disk_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_secs(5),
            runner_unresponsive_after: Duration::from_secs(15),
            runner_lost_after: Duration::from_secs(45),
            reconcile_interval: Duration::from_secs(2),
            placement_stale_after: Duration::from_secs(300),
            cpu_overcommit: 1.0,
            memory_overcommit: 1.0,
            placement_attempts: 3,
            create_timeout: Duration::from_secs(180),
            runner_call_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(60),
            record_retention: Duration::from_secs(7 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            default_quota: Quota::default(),
            default_vcpus: 1,
            default_memory_mib: 512,
            default_disk_mib: 1024,
        }
    }
}
