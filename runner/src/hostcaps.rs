//! Host capabilities that decide how VMs run here.
//!
//! `/dev/kvm` existing is not enough: some hosts expose a software hypervisor there that cannot boot a stock kernel
//! at usable speed. Hardware virtualization is detected from the CPU flags (`vmx` for Intel VT-x, `svm` for AMD-V).

/// Whether the CPU advertises hardware virtualization and /dev/kvm can be opened.
pub fn hardware_virtualization() -> bool {
    cpu_has_virt_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
        && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Why hardware virtualization is not usable, for messages such as a skipped test.
pub fn why_no_hardware_virtualization() -> Option<String> {
    if !cpu_has_virt_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()) {
        return Some("the CPU flags have neither vmx nor svm (no hardware virtualization)".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Some(format!("/dev/kvm cannot be opened: {e}"));
    }
    None
}

fn cpu_has_virt_flags(cpuinfo: &str) -> bool {
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The host's TSC frequency in kHz, measured against the monotonic clock over 20 ms (None off x86-64).
///
/// Under TCG the guest's TSC runs at the host's rate, and a microvm guest has no HPET or PM timer to calibrate it
/// against: when the host is busy the kernel's early calibration fails, it marks the TSC unstable and may hang.
/// Passing the rate as `tsc_early_khz=` removes the calibration.
pub fn tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(measure_tsc_khz)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    use std::time::{Duration, Instant};
    // SAFETY: rdtsc has no preconditions on x86-64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let mut best: Option<u64> = None;
    // Three short windows; the smallest estimate is the one least inflated by preemption between the two reads.
    for _ in 0..3 {
        let (t0, c0) = (Instant::now(), tsc());
        std::thread::sleep(Duration::from_millis(20));
        let (c1, t1) = (tsc(), Instant::now());
        let ns = t1.duration_since(t0).as_nanos() as u64;
        if ns == 0 || c1 <= c0 {
            return None;
        }
        let khz = (c1 - c0) as u128 * 1_000_000 / ns as u128;
        best = Some(best.map_or(khz as u64, |b: u64| b.min(khz as u64)));
    }
    best
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flags() {
        assert!(cpu_has_virt_flags("processor: 0\nflags\t\t: fpu vme vmx sse\n"));
        assert!(cpu_has_virt_flags("flags : fpu svm\n"));
        assert!(!cpu_has_virt_flags("flags : fpu sse hypervisor\nvmx flags : ept\n"));
    }
}
