//! Boot timings the agent reports through Ping.

use std::sync::OnceLock;
use std::time::Instant;

use boxyard_proto::agent::PingResponse;

pub struct BootInfo {
    started: Instant,
    /// Kernel uptime when the agent started (0 in local mode).
    pub kernel_boot_ms: u64,
    /// Time spent in init (modules, mounts, switch root).
    pub init_ms: u64,
    ready_ms: OnceLock<u64>,
}

/// The kernel's uptime in milliseconds (0 when /proc is not mounted).
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<f64>().ok()))
        .map(|secs| (secs * 1000.0) as u64)
        .unwrap_or(0)
}

impl BootInfo {
    pub fn new(started: Instant, kernel_boot_ms: u64, init_ms: u64) -> Self {
        BootInfo { started, kernel_boot_ms, init_ms, ready_ms: OnceLock::new() }
    }

    /// Records the first session.
    pub fn mark_ready(&self) {
        self.ready_ms.get_or_init(|| self.kernel_boot_ms + self.started.elapsed().as_millis() as u64);
    }

    pub fn ping(&self) -> PingResponse {
        PingResponse {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            kernel_boot_ms: self.kernel_boot_ms,
            init_ms: self.init_ms,
            ready_ms: self.ready_ms.get().copied().unwrap_or(0),
            uptime_ms: self.kernel_boot_ms + self.started.elapsed().as_millis() as u64,
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}
