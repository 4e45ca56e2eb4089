//! The VM monitor: how a box actor notices that its running VM exited by itself (the guest powered off, QEMU
//! crashed, the local agent was killed). The actor polls on a [`Monitor`] tick while its box runs; a VM found
//! stopped leaves the box `STOPPED` with the reason, and its executions' pumps finish them with what they stored.

use std::time::Duration;

use crate::vm::{Vm, VmStatus};

/// How often a running box's VM is checked for an unexpected exit.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// The monitor's clock.
pub struct Monitor {
    interval: tokio::time::Interval,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A clock ticking every [`MONITOR_INTERVAL`] (missed ticks are skipped, not caught up).
    pub fn new() -> Self {
        let mut interval = tokio::time::interval(MONITOR_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Monitor { interval }
    }

    /// Waits for the next check.
    pub async fn tick(&mut self) {
        self.interval.tick().await;
    }
}

/// How the VM ended, if it has.
pub async fn exited(vm: &mut dyn Vm) -> Option<String> {
    match vm.status().await {
        VmStatus::Stopped { detail } => Some(detail),
        _ => None,
    }
}
