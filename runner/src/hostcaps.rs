//! Host capabilities that decide how VMs run here.
//!
//! `/dev/kvm` existing is not enough: some hosts expose a software hypervisor there that cannot boot a stock kernel
//! at usable speed. Hardware virtualization is detected from the CPU flags (`vmx` for Intel VT-x, `svm` for AMD-V).

/// Whether the CPU advertises hardware virtualization and /dev/kvm can be opened.
pub fn hardware_virtualization() -> bool {
    cpu_has_virt_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
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
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
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
