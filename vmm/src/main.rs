//! The `boxyard-vmm` binary: one process runs one microVM until the guest powers off, resets or fails.
//!
//! Exit status: 0 when the guest powered off or reset, 1 when the VM failed, 2 for a bad command line or a VM that
//! could not be built. SIGTERM presses the guest's ACPI power button (a graceful stop: the guest agent powers off,
//! the process then exits 0); SIGKILL is the hard stop. Once the VM is built (every file open, the agent and control
//! sockets bound, still one thread), the process enters its jail (`jail.rs`: own mount namespace with an empty root,
//! `--jail-uid`/`--jail-gid`, no_new_privs; `--no-jail` for development), then a seccomp filter limits it to the
//! system calls the running VMM needs (`--no-seccomp` for development), and only then do the vCPU threads and the
//! control thread start. `--control-socket` serves the control protocol (docs/vmm.md, "Control socket"): pause,
//! resume, stop, kill (exit status 3), status, metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use boxyard_vmm::api::{ControlServer, Controller};
use boxyard_vmm::builder::{self, ConsoleOutput, DEFAULT_CMDLINE, DiskConfig, VmConfig};
use clap::Parser;
use vmm_sys_util::eventfd::EventFd;

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
    /// Serve the control socket here (pause, resume, stop, kill, status, metrics: one JSON object per line).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Write the VMM's pid here.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Print start-up timings to stderr.
    #[arg(long)]
    timing: bool,
    /// DEVELOPMENT ONLY: run without the seccomp filter.
    #[arg(long)]
    no_seccomp: bool,
    /// The unprivileged uid the VMM runs as once the VM is built (required unless --no-jail; give each VM its own).
    #[arg(long, value_name = "UID")]
    jail_uid: Option<u32>,
    /// The gid the VMM runs as (default: the same number as --jail-uid).
    #[arg(long, value_name = "GID", requires = "jail_uid")]
    jail_gid: Option<u32>,
    /// DEVELOPMENT ONLY: no jail (the VMM keeps the caller's ids and sees the host's files).
    #[arg(long, conflicts_with_all = ["jail_uid", "jail_gid"])]
    no_jail: bool,
}

/// The jail the arguments ask for: `None` with `--no-jail`, an error naming the flags when neither is given.
fn jail_config(args: &Args) -> anyhow::Result<Option<boxyard_vmm::jail::JailConfig>> {
    match (args.no_jail, args.jail_uid) {
        (true, _) => Ok(None),
        (false, Some(uid)) => Ok(Some(boxyard_vmm::jail::JailConfig { uid, gid: args.jail_gid.unwrap_or(uid) })),
        (false, None) => bail!(
            "the VMM runs jailed: give it an unprivileged id of its own with --jail-uid UID [--jail-gid GID], \
             or pass --no-jail (development only)"
        ),
    }
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
    let uptime_from = Instant::now();
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
    let jail = jail_config(&args)?;
    let filter = boxyard_vmm::seccomp::filter()?;
    boxyard_vmm::timing::mark("seccomp compile");
    // The control socket is bound now, as root, by path; its thread starts after the jail.
    let control = match &args.control_socket {
        Some(p) => Some(ControlServer::bind(p).with_context(|| format!("control socket {}", p.display()))?),
        None => None,
    };
    boxyard_vmm::vstate::run_control::install_kick_handler();
    // Everything that needs a path or root happens in build; the jail needs a single-threaded process, so the vCPU
    // and control threads start only after it (and after the seccomp filter: the guest never runs unconfined).
    let built = builder::build(&cfg)?;
    install_sigterm(built.power_button_fd());
    match jail {
        Some(j) => {
            let (t, cpu) = (Instant::now(), cpu_time_ms());
            boxyard_vmm::jail::enter(&j)?;
            if args.timing {
                eprintln!(
                    "boxyard-vmm: jail entered in {:.3} ms ({:.3} CPU-ms)",
                    t.elapsed().as_secs_f64() * 1e3,
                    cpu_time_ms() - cpu
                );
            }
        }
        None => eprintln!(
            "boxyard-vmm: WARNING: --no-jail: the VMM keeps its caller's ids and sees the host's file system \
             (development only)"
        ),
    }
    if args.no_seccomp {
        eprintln!("boxyard-vmm: WARNING: --no-seccomp: the VMM runs without its system-call filter");
    } else {
        boxyard_vmm::seccomp::report_blocked_calls();
        boxyard_vmm::seccomp::apply(&filter)?;
    }
    boxyard_vmm::timing::mark("seccomp");
    let vm = built.start()?;
    let (jobs_tx, jobs) = std::sync::mpsc::sync_channel(4);
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).context("control eventfd")?);
    if let Some(server) = control {
        server.spawn(jobs_tx, wake.clone()).context("control socket thread")?;
    }
    if args.timing {
        let entry = boxyard_vmm::timing::wait_first_entry(builder::FIRST_ENTRY_WAIT);
        eprint!("{}", boxyard_vmm::timing::report(started, entry));
    }
    let reason = Controller::new(&vm, uptime_from).run(&jobs, &wake);
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

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(["boxyard-vmm", "--kernel", "/k"].iter().chain(extra))
    }

    #[test]
    fn the_jail_is_the_default_and_needs_an_id() {
        let err = jail_config(&parse(&[]).unwrap()).unwrap_err().to_string();
        assert!(err.contains("--jail-uid") && err.contains("--no-jail"), "{err}");
        let j = jail_config(&parse(&["--jail-uid", "4000001"]).unwrap()).unwrap().unwrap();
        assert_eq!((j.uid, j.gid), (4_000_001, 4_000_001), "the gid defaults to the uid");
        let j = jail_config(&parse(&["--jail-uid", "7", "--jail-gid", "8"]).unwrap()).unwrap().unwrap();
        assert_eq!((j.uid, j.gid), (7, 8));
        assert!(jail_config(&parse(&["--no-jail"]).unwrap()).unwrap().is_none());
        assert!(parse(&["--no-jail", "--jail-uid", "7"]).is_err(), "--no-jail and --jail-uid conflict");
        assert!(parse(&["--jail-gid", "7"]).is_err(), "--jail-gid needs --jail-uid");
    }
}
