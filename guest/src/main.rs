//! `boxyard-guest`: the Boxyard guest agent.
//!
//! As PID 1 of a box's VM it boots the box (see [`init`]) and serves the agent API on the virtio-serial port
//! `boxyard.agent`. With `--listen-unix PATH` it is the **local test backend**: it serves the same API on a unix
//! socket and runs commands directly on the host, with no VM and no isolation (tests and development only).

mod boot;
mod exec;
mod fd;
mod files;
mod init;
mod service;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use boot::BootInfo;
use exec::{ExecConfig, ExecTable, reaper::Reaper};
use service::{AgentService, ShutdownHook};

const HELP: &str = "\
boxyard-guest: the Boxyard guest agent

USAGE:
    boxyard-guest                      run as PID 1 of a box VM (boots the box, serves on the
                                       virtio-serial port \"boxyard.agent\")
    boxyard-guest --listen-unix PATH   LOCAL TEST MODE: serve on a unix socket and run commands on
                                       this host without any isolation (tests and development only);
                                       SIGTERM or Shutdown kills every execution, then the agent exits

OPTIONS:
    --ring-bytes N    unacknowledged output kept per execution before the process is
                      back-pressured (default 4194304; in a VM: boxyard.ring=N on the kernel cmdline)
    -h, --help        this help
    -V, --version     the version
";

/// Set by `boxyard.debug` on the kernel command line: progress messages on the console.
pub static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a progress message on the console when debugging is on.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("boxyard-guest: {}", format!($($arg)*));
        }
    };
}

enum Mode {
    Vm,
    Local(PathBuf),
}

fn parse_args() -> Result<(Mode, Option<usize>), String> {
    let mut args = std::env::args().skip(1);
    let mut mode = None;
    let mut ring = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("boxyard-guest {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "--listen-unix" => {
                mode = Some(Mode::Local(args.next().ok_or("--listen-unix needs a socket path")?.into()));
            }
            "--ring-bytes" => {
                let v = args.next().ok_or("--ring-bytes needs a number")?;
                ring = Some(v.parse().map_err(|_| format!("--ring-bytes: {v:?} is not a number of bytes"))?);
            }
            // The kernel passes unknown command-line words to init as arguments: ignore them as PID 1.
            _ if std::process::id() == 1 => {}
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    match mode {
        Some(m) => Ok((m, ring)),
        None if std::process::id() == 1 => Ok((Mode::Vm, ring)),
        None => Err("not PID 1: to run outside a VM use --listen-unix PATH (local test mode); see --help".into()),
    }
}

fn main() {
    let started = Instant::now();
    let (mode, ring) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("boxyard-guest: {e}");
            std::process::exit(2);
        }
    };
    match mode {
        Mode::Vm => run_vm(started, ring),
        Mode::Local(path) => run_local(started, path, ring),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

fn run_vm(started: Instant, ring: Option<usize>) -> ! {
    // /proc is not mounted yet: boot() mounts it; the kernel's uptime is read right after.
    match init::boot() {
        Ok(opts) => {
            DEBUG.store(opts.debug, std::sync::atomic::Ordering::Relaxed);
            if init::power_button::watch(|| init::power_off()) == 0 {
                debug!("no ACPI power button: the VM powers off only through the agent");
            }
            let k = boot::uptime_ms().saturating_sub(started.elapsed().as_millis() as u64);
            let ring = ring.or(opts.ring_bytes);
            let boot = Arc::new(BootInfo::new(started, k, started.elapsed().as_millis() as u64));
            let rt = runtime();
            let result = rt.block_on(async move {
                let reaper = Reaper::start()?;
                let config =
                    ExecConfig { ring_bytes: ring.unwrap_or(ExecConfig::default().ring_bytes), ..Default::default() };
                let table = Arc::new(ExecTable::new(reaper, config));
                let hook: ShutdownHook = Arc::new(|| init::power_off());
                let device = wait_for_port()?;
                let sessions = transport::port::sessions(&device)?;
                let svc = AgentService { table, boot: boot.clone(), shutdown: hook };
                transport::serve(sessions, svc, boot).await.map_err(std::io::Error::other)
            });
            if let Err(e) = result {
                eprintln!("boxyard-guest: agent stopped: {e}");
            }
        }
        Err(e) => {
            eprintln!("boxyard-guest: boot failed: {e}");
        }
    }
    init::power_off()
}

fn wait_for_port() -> std::io::Result<PathBuf> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(p) = transport::port::find_port(boxyard_proto::AGENT_PORT_NAME) {
            return Ok(p);
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "no virtio-serial port named {:?}: the VM must offer it",
                boxyard_proto::AGENT_PORT_NAME
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn run_local(started: Instant, path: PathBuf, ring: Option<usize>) {
    let boot = Arc::new(BootInfo::new(started, 0, 0));
    let rt = runtime();
    let result: std::io::Result<()> = rt.block_on(async move {
        let reaper = Reaper::start()?;
        let config = ExecConfig { ring_bytes: ring.unwrap_or(ExecConfig::default().ring_bytes), ..Default::default() };
        let table = Arc::new(ExecTable::new(reaper, config));
        // Executions run in their own sessions on this host: ending the agent must end them too.
        let kill_all = {
            let table = table.clone();
            move || {
                for exec in table.list() {
                    let _ = exec.signal("KILL");
                }
                std::process::exit(0)
            }
        };
        let hook: ShutdownHook = Arc::new(kill_all.clone());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            term.recv().await;
            kill_all();
        });
        let sessions = transport::unix::sessions(&path)?;
        eprintln!("boxyard-guest: LOCAL TEST MODE (no isolation) serving on {}", path.display());
        let svc = AgentService { table, boot: boot.clone(), shutdown: hook };
        transport::serve(sessions, svc, boot).await.map_err(std::io::Error::other)
    });
    if let Err(e) = result {
        eprintln!("boxyard-guest: {e}");
        std::process::exit(1);
    }
}
