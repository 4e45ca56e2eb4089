//! The `boxyard-vmm` binary: one process runs one microVM until the guest powers off, resets or fails.
//!
//! Exit status: 0 when the guest powered off or reset, 1 when the VM failed, 2 for a bad command line or a VM that
//! could not be built. SIGTERM presses the guest's ACPI power button (a graceful stop: the guest agent powers off,
//! the process then exits 0); SIGKILL is the hard stop. Once the VM is built, a seccomp filter limits every thread to
//! the system calls the running VMM needs (`--no-seccomp` for development).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, bail};
use boxyard_vmm::builder::{self, ConsoleOutput, DEFAULT_CMDLINE, DiskConfig, VmConfig};
use clap::Parser;

/// Boots a Linux microVM on KVM.
#[derive(Parser, Debug)]
#[command(name = "boxyard-vmm", version)]
struct Args {
    /// Kernel (bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// initramfs.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// The whole kernel command line (default: the built-in one, see --append).
    #[arg(long)]
    cmdline: Option<String>,
    /// Arguments appended to the command line.
    #[arg(long = "append", value_name = "ARGS")]
    append: Vec<String>,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u64,
    /// A disk: PATH,serial=NAME[,ro] (repeatable, in order).
    #[arg(long = "disk", value_name = "PATH,serial=NAME[,ro]")]
    disks: Vec<String>,
    /// Host unix socket of the agent channel (virtio-console port `boxyard.agent`); the VMM listens on it.
    #[arg(long)]
    agent_socket: Option<PathBuf>,
    /// Serial console log file (default: stdout).
    #[arg(long)]
    console_log: Option<PathBuf>,
    /// No virtio-rng device.
    #[arg(long)]
    no_rng: bool,
    /// Write the VMM's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Print start-up timings to stderr.
    #[arg(long)]
    timing: bool,
    /// DEVELOPMENT ONLY: run without the seccomp filter.
    #[arg(long)]
    no_seccomp: bool,
}

fn parse_disk(s: &str) -> anyhow::Result<DiskConfig> {
    let mut parts = s.split(',');
    let path = PathBuf::from(parts.next().filter(|p| !p.is_empty()).context("--disk needs a path")?);
    let (mut read_only, mut serial) = (false, String::new());
    for p in parts {
        match p.split_once('=') {
            None if p == "ro" => read_only = true,
            Some(("serial", v)) => serial = v.to_string(),
            _ => bail!("--disk {s}: unknown option {p:?}"),
        }
    }
    Ok(DiskConfig { path, read_only, serial })
}

/// The power button eventfd the SIGTERM handler writes to (-1 before the VM exists).
static POWER_BUTTON_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigterm(_sig: libc::c_int) {
    let fd = POWER_BUTTON_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) on an eventfd with an 8-byte buffer is async-signal-safe.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Routes SIGTERM to the power button.
fn install_sigterm(fd: std::os::fd::RawFd) {
    POWER_BUTTON_FD.store(fd, Ordering::Relaxed);
    // SAFETY: installs a handler that only calls write(2).
    unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
}

fn cpu_time_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn main() {
    let started = boxyard_vmm::timing::Stamp::now();
    let code = match run(started) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("boxyard-vmm: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(started: boxyard_vmm::timing::Stamp) -> anyhow::Result<i32> {
    let args = Args::parse();
    boxyard_vmm::timing::mark("command line");
    let mut cmdline = args.cmdline.clone().unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    for a in &args.append {
        cmdline.push(' ');
        cmdline.push_str(a);
    }
    let cfg = VmConfig {
        kernel: args.kernel.clone(),
        initramfs: args.initramfs.clone(),
        cmdline,
        vcpus: args.cpus,
        memory_mib: args.memory,
        disks: args.disks.iter().map(|d| parse_disk(d)).collect::<anyhow::Result<_>>()?,
        agent_socket: args.agent_socket.clone(),
        console: args.console_log.clone().map(ConsoleOutput::File).unwrap_or(ConsoleOutput::Stdout),
        rng: !args.no_rng,
    };
    if let Some(p) = &args.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id())).with_context(|| format!("{}", p.display()))?;
    }
    let filter = boxyard_vmm::seccomp::filter()?;
    boxyard_vmm::timing::mark("seccomp compile");
    let vm = builder::start(&cfg)?;
    install_sigterm(vm.power_button_fd());
    if args.no_seccomp {
        eprintln!("boxyard-vmm: WARNING: --no-seccomp: the VMM runs without its system-call filter");
    } else {
        boxyard_vmm::seccomp::report_blocked_calls();
        boxyard_vmm::seccomp::apply(&filter)?;
    }
    boxyard_vmm::timing::mark("seccomp");
    if args.timing {
        let entry = boxyard_vmm::timing::wait_first_entry(builder::FIRST_ENTRY_WAIT);
        eprint!("{}", boxyard_vmm::timing::report(started, entry));
    }
    let reason = vm.wait();
    if args.timing {
        eprintln!(
            "boxyard-vmm: VM ended ({reason:?}) after {:.3} s, {:.1} CPU-ms in the VMM process",
            (boxyard_vmm::timing::Stamp::now().monotonic_ms - started.monotonic_ms) / 1e3,
            cpu_time_ms()
        );
    }
    Ok(reason.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options_parse() {
        assert_eq!(
            parse_disk("/r.ext4,serial=boxyard-root,ro").unwrap(),
            DiskConfig { path: "/r.ext4".into(), read_only: true, serial: "boxyard-root".into() }
        );
        assert!(!parse_disk("/w.ext4").unwrap().read_only);
        assert!(parse_disk(",ro").is_err());
        assert!(parse_disk("/w,bogus").is_err());
    }
}
