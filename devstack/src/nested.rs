//! Running a test binary's VM tests again on the `kvm` backend (our own monitor, boxyard-vmm): directly where the
//! host has hardware virtualization, otherwise inside the nested-KVM harness (`scripts/nested-kvm.sh`: an L1 guest
//! under QEMU's TCG with a real /dev/kvm). The tests pick their backend from [`BACKEND_ENV`].

use std::path::Path;
use std::process::{Command, Stdio};

/// The environment variable that picks the VM backend of the real-VM tests: `qemu` (the default) or `kvm`.
pub const BACKEND_ENV: &str = "BOXYARD_TEST_VM_BACKEND";

/// The backend the real-VM tests run on: "qemu" (default) or "kvm". Panics on any other value, naming both.
pub fn backend_name() -> &'static str {
    match std::env::var(BACKEND_ENV).as_deref() {
        Ok("kvm") => "kvm",
        Ok("qemu") | Err(_) => "qemu",
        Ok(other) => panic!("{BACKEND_ENV}={other}: use qemu or kvm"),
    }
}

/// Whether this host runs KVM guests directly: /dev/kvm and a CPU with vmx or svm (a software /dev/kvm, as on
/// these CI machines, cannot boot a stock kernel).
pub fn hardware_kvm() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Path::new("/dev/kvm").exists()
        && flags.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// How the tests are run again.
#[derive(Clone, Debug)]
pub struct Rerun<'a> {
    /// The names of the tests (exact).
    pub tests: &'a [&'a str],
    /// The L1 guest's memory when nested.
    pub l1_mem_mib: u32,
    /// The limit of one attempt when nested (the harness boots L1 once more when L1 itself hangs or fails).
    pub timeout_s: u32,
}

/// Runs `rerun.tests` of the current test binary again with `BOXYARD_TEST_VM_BACKEND=kvm`, one at a time, from the
/// workspace `root`. Panics (failing the calling test) unless every one of them ran and passed; prints their output.
pub fn rerun_on_kvm_backend(root: &Path, rerun: &Rerun<'_>) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut args: Vec<String> = rerun.tests.iter().map(|t| t.to_string()).collect();
    args.extend(["--exact", "--nocapture", "--test-threads=1"].map(String::from));
    let out = if hardware_kvm() {
        Command::new(&exe).args(&args).env(BACKEND_ENV, "kvm").current_dir(root).output()
    } else {
        // scripts/setup.sh installs QEMU: without it this host cannot run the tests, which is a failure, not a pass.
        assert!(
            Command::new("qemu-system-x86_64").arg("--version").stdout(Stdio::null()).status().is_ok(),
            "no hardware KVM and no qemu-system-x86_64 for the nested-KVM harness (run scripts/setup.sh)"
        );
        Command::new("bash")
            .arg(root.join("scripts/nested-kvm.sh"))
            .args(["--mem", &rerun.l1_mem_mib.to_string(), "--timeout", &rerun.timeout_s.to_string(), "--retry", "--"])
            .arg("env")
            .arg(format!("{BACKEND_ENV}=kvm"))
            .arg(&exe)
            .args(&args)
            .current_dir(root)
            .output()
    }
    .expect("running the tests on the kvm backend");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("---- the tests on the kvm backend ----\n{text}---- end ----");
    assert!(out.status.success(), "tests failed on the kvm backend ({:?}): {:?}", out.status, rerun.tests);
    let want = format!("test result: ok. {} passed", rerun.tests.len());
    assert!(text.contains(&want), "not every test ran on the kvm backend (wanted {want:?})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_defaults_to_qemu() {
        // The variable is unset in a normal test run (only the kvm rerun sets it).
        if std::env::var_os(BACKEND_ENV).is_none() {
            assert_eq!(backend_name(), "qemu");
        }
    }
}
