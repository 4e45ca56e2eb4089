//! Start-up timings: where the VMM's wall and CPU time goes between process start and the boot vCPU's first guest
//! entry. Phases are marked as they end ([`mark`]); the first entry is recorded by the boot vCPU thread itself just
//! before its first `KVM_RUN` ([`record_first_entry`]), so the process CPU time read there excludes guest time.
//! Marks cost one vDSO clock read and one `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` each, so they are always taken;
//! `boxyard-vmm --timing` prints them ([`report`]).

use std::sync::{Mutex, OnceLock};

/// One point in time, as the monotonic clock (comparable across processes) and the process's CPU time so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stamp {
    /// `CLOCK_MONOTONIC` in milliseconds (the same clock as Python's `time.monotonic()`).
    pub monotonic_ms: f64,
    /// CPU time of the whole process (all threads) since it started, in milliseconds (includes exec and dynamic
    /// linking, which run before `main`).
    pub process_cpu_ms: f64,
}

impl Stamp {
    /// Now.
    pub fn now() -> Self {
        Stamp {
            monotonic_ms: clock_ms(libc::CLOCK_MONOTONIC),
            process_cpu_ms: clock_ms(libc::CLOCK_PROCESS_CPUTIME_ID),
        }
    }
}

fn clock_ms(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

static PHASES: Mutex<Vec<(&'static str, Stamp)>> = Mutex::new(Vec::new());
static FIRST_ENTRY: OnceLock<Stamp> = OnceLock::new();

/// Records that the phase `name` ended now.
pub fn mark(name: &'static str) {
    let s = Stamp::now();
    if let Ok(mut p) = PHASES.lock() {
        p.push((name, s));
    }
}

/// Called by the boot vCPU thread before every `KVM_RUN`; only the first call records.
pub fn record_first_entry() {
    FIRST_ENTRY.get_or_init(Stamp::now);
}

/// The boot vCPU's first guest entry, once it happened.
pub fn first_entry() -> Option<Stamp> {
    FIRST_ENTRY.get().copied()
}

/// Waits until the boot vCPU entered the guest or `limit` passed.
pub fn wait_first_entry(limit: std::time::Duration) -> Option<Stamp> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = first_entry() {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// The phases so far, each with the wall and CPU time it took since the previous mark (the first since `start`).
pub fn phases(start: Stamp) -> Vec<(&'static str, f64, f64)> {
    let marks = PHASES.lock().map(|p| p.clone()).unwrap_or_default();
    let mut prev = start;
    let mut out = Vec::with_capacity(marks.len());
    for (name, s) in marks {
        out.push((name, s.monotonic_ms - prev.monotonic_ms, s.process_cpu_ms - prev.process_cpu_ms));
        prev = s;
    }
    out
}

/// The `--timing` report: one line per phase (wall ms, CPU ms), then the first entry with absolute monotonic time
/// (so a caller that noted the clock before spawning the process can compute the wall time from process start).
pub fn report(start: Stamp, entry: Option<Stamp>) -> String {
    let mut s = format!(
        "boxyard-vmm: timing: main() entered with {:.2} CPU-ms used (exec, dynamic linking)\n",
        start.process_cpu_ms
    );
    for (name, wall, cpu) in phases(start) {
        s.push_str(&format!("boxyard-vmm: timing: {name:<22} {wall:7.2} ms wall {cpu:7.2} CPU-ms\n"));
    }
    match entry {
        Some(e) => s.push_str(&format!(
            "boxyard-vmm: first guest entry {:.2} ms after main() ({:.2} CPU-ms since process start; at monotonic {:.3} ms)\n",
            e.monotonic_ms - start.monotonic_ms,
            e.process_cpu_ms,
            e.monotonic_ms
        )),
        None => s.push_str("boxyard-vmm: the boot vCPU did not enter the guest in time\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_differences_between_marks() {
        let start = Stamp::now();
        mark("a");
        mark("b");
        let p = phases(start);
        let names: Vec<_> = p.iter().map(|x| x.0).collect();
        assert!(names.windows(2).any(|w| w == ["a", "b"]), "{names:?}");
        assert!(p.iter().all(|(_, w, c)| *w >= 0.0 && *c >= 0.0));
        assert!(report(start, None).contains("did not enter"));
    }
}
