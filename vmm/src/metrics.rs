//! The VMM's counters, read through the control socket's `metrics` request. Each counter is a relaxed atomic that
//! only ever grows, written by whoever does the work (vCPU threads, device workers) and read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of the VMM process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// vCPU exits to the VMM for port I/O.
    pub exits_io: Counter,
    /// vCPU exits to the VMM for MMIO.
    pub exits_mmio: Counter,
    /// `KVM_RUN` calls that returned because of a signal or a kick (pause, stop).
    pub exits_interrupted: Counter,
    /// Bytes the guest read from its virtio-blk disks.
    pub block_read_bytes: Counter,
    /// Bytes the guest wrote to its virtio-blk disks.
    pub block_write_bytes: Counter,
    /// virtio-blk flushes.
    pub block_flushes: Counter,
    /// virtio-blk requests completed with an error status.
    pub block_errors: Counter,
    /// Bytes from the agent socket to the guest.
    pub agent_bytes_to_guest: Counter,
    /// Bytes from the guest to the agent socket.
    pub agent_bytes_to_host: Counter,
    /// Pauses completed.
    pub pauses: Counter,
}

/// The process's counters.
pub static METRICS: Metrics = Metrics {
    exits_io: Counter::new(),
    exits_mmio: Counter::new(),
    exits_interrupted: Counter::new(),
    block_read_bytes: Counter::new(),
    block_write_bytes: Counter::new(),
    block_flushes: Counter::new(),
    block_errors: Counter::new(),
    agent_bytes_to_guest: Counter::new(),
    agent_bytes_to_host: Counter::new(),
    pauses: Counter::new(),
};

impl Metrics {
    /// Every counter by name, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("exits_io", self.exits_io.get()),
            ("exits_mmio", self.exits_mmio.get()),
            ("exits_interrupted", self.exits_interrupted.get()),
            ("block_read_bytes", self.block_read_bytes.get()),
            ("block_write_bytes", self.block_write_bytes.get()),
            ("block_flushes", self.block_flushes.get()),
            ("block_errors", self.block_errors.get()),
            ("agent_bytes_to_guest", self.agent_bytes_to_guest.get()),
            ("agent_bytes_to_host", self.agent_bytes_to_host.get()),
            ("pauses", self.pauses.get()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_and_the_snapshot_names_each_once() {
        let m = Metrics::default();
        m.block_read_bytes.add(4096);
        m.block_read_bytes.add(512);
        m.pauses.inc();
        let s = m.snapshot();
        assert!(s.contains(&("block_read_bytes", 4608)));
        assert!(s.contains(&("pauses", 1)));
        let mut names: Vec<_> = s.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), s.len());
    }
}
