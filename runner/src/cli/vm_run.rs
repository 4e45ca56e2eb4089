//! `boxyard-runner vm run`: boot a VM, run one command, stream its output, tear the VM down.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use boxyard_proto::agent::{
    ExecRequest, ExecResult, ResizeRequest, ShutdownRequest, Tty, WriteStdinRequest, exec_result::Outcome,
};
use boxyard_runner::agent::{Agent, OutputEvent, OutputFollower};
use boxyard_runner::launch::launch;
use boxyard_runner::vm::{VmBackend, VmSpec};
use clap::Args;
use tokio::io::AsyncReadExt;

use super::VmOptions;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub vm: VmOptions,
    /// VM backend: QEMU, or our own KVM monitor (boxyard-vmm; needs hardware virtualization).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: RunBackend,
    /// Persistent writable disk (ext4 image) for the box's changes; created with --disk-size if missing.
    /// Without it the VM gets a fresh disk that is deleted afterwards.
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Size of a newly created writable disk (e.g. 512M, 2G).
    #[arg(long, default_value = "1G", value_parser = super::units::parse_size)]
    pub disk_size: u64,
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the box.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User in the box: a name, a uid, or uid:gid.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Run on a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Forward this process's stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Seconds before the command is sent SIGTERM (then SIGKILL after a grace period).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Keep the VM's run directory (console log, QEMU log) and print its path.
    #[arg(long)]
    pub keep_run_dir: bool,
    /// Print progress (boot time) on stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.into(), v.into())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Restores the terminal mode when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable(on: bool) -> Self {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !on || !nix::unistd::isatty(&stdin).unwrap_or(false) {
            return RawMode(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

fn terminal_size() -> Tty {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 && ws.ws_col > 0 {
        Tty { rows: ws.ws_row.into(), cols: ws.ws_col.into() }
    } else {
        Tty { rows: 24, cols: 80 }
    }
}

/// The exit status of `vm run` for a result.
pub fn exit_status(r: &ExecResult) -> u8 {
    if r.timed_out {
        return 124;
    }
    match &r.outcome {
        Some(Outcome::ExitCode(c)) => (*c & 0xff) as u8,
        Some(Outcome::Signal(s)) => 128 + boxyard_proto::signal::parse(s).unwrap_or(0) as u8,
        None => super::EXIT_RUNNER_ERROR,
    }
}

/// The backends `vm run` can boot with.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum RunBackend {
    /// kvm where the CPU has hardware virtualization (and boxyard-vmm is installed), QEMU otherwise.
    Auto,
    /// QEMU (KVM with hardware virtualization, TCG otherwise).
    Qemu,
    /// boxyard-vmm on /dev/kvm.
    Kvm,
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let backend: std::sync::Arc<dyn VmBackend> = match args.backend {
        RunBackend::Auto => args.vm.guest.auto_backend(),
        RunBackend::Qemu => std::sync::Arc::new(args.vm.guest.backend()),
        RunBackend::Kvm => std::sync::Arc::new(args.vm.guest.kvm_backend()?),
    };
    let image = args.vm.guest.image();
    let run_dir = tempfile::Builder::new().prefix("boxyard-vm-").tempdir().context("create a run directory")?;
    let disk = match &args.disk {
        Some(d) => {
            if !d.exists() {
                boxyard_runner::disk::create_ext4(d, args.disk_size).await?;
            }
            d.clone()
        }
        None => {
            let d = boxyard_runner::paths::VmPaths::new(run_dir.path()).scratch_disk();
            boxyard_runner::disk::create_ext4(&d, args.disk_size).await?;
            d
        }
    };
    let spec = VmSpec {
        id: format!("run-{}", std::process::id()),
        kernel: image.kernel,
        initramfs: image.initramfs,
        root_image: args.vm.guest.rootfs.clone(),
        writable_disk: Some(disk),
        vcpus: args.vm.cpus,
        memory_mib: args.vm.memory,
        run_dir: run_dir.path().to_path_buf(),
        extra_kernel_args: args.vm.guest.kernel_args.clone(),
    };
    let mut launched = match launch(backend.as_ref(), spec, Duration::from_secs(args.vm.guest.boot_timeout)).await {
        Ok(l) => l,
        Err(e) => {
            if args.keep_run_dir {
                let kept = run_dir.keep();
                eprintln!("boxyard-runner: run directory kept at {}", kept.display());
            }
            return Err(e.into());
        }
    };
    if args.verbose {
        eprintln!("boxyard-runner: {} VM ready in {:.2} s", backend.name(), launched.boot_time.as_secs_f64());
    }
    let outcome = run_command(&mut launched.agent, &args).await;
    // Power off through the agent (it syncs the writable disk), then make sure the VM is gone.
    let _ = tokio::time::timeout(Duration::from_secs(5), launched.agent.shutdown(ShutdownRequest {})).await;
    launched.vm.stop(Duration::from_secs(10)).await?;
    if args.keep_run_dir {
        let kept = run_dir.keep();
        eprintln!("boxyard-runner: run directory kept at {}", kept.display());
    }
    outcome
}

async fn run_command(agent: &mut Agent, args: &RunArgs) -> anyhow::Result<u8> {
    let tty = args.tty.then(terminal_size);
    let req = ExecRequest {
        exec_id: String::new(),
        argv: args.command.clone(),
        env: args.env.iter().cloned().collect::<HashMap<_, _>>(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        tty,
        stdin: args.interactive,
        timeout_ms: args.timeout.map(|s| (s * 1000.0) as u64).unwrap_or(0),
        kill_grace_ms: 0,
    };
    let exec_id = match agent.exec(req).await {
        Ok(r) => r.into_inner().exec_id,
        Err(status) => bail!("{}", status.message()),
    };
    let _raw = RawMode::enable(args.tty && args.interactive);

    let mut background = Vec::new();
    if args.interactive {
        let mut a = agent.clone();
        let id = exec_id.clone();
        background.push(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            let mut offset = 0u64;
            loop {
                let n = stdin.read(&mut buf).await.unwrap_or(0);
                let req = WriteStdinRequest { exec_id: id.clone(), offset, data: buf[..n].to_vec(), eof: n == 0 };
                match a.write_stdin(req).await {
                    Ok(r) => offset = r.into_inner().offset,
                    Err(_) => return,
                }
                if n == 0 {
                    return;
                }
            }
        }));
    }
    if args.tty {
        let mut a = agent.clone();
        let id = exec_id.clone();
        if let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
            background.push(tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    let _ = a.resize(ResizeRequest { exec_id: id.clone(), tty: Some(terminal_size()) }).await;
                }
            }));
        }
    }

    let result = follow(agent, &exec_id).await;
    for b in background {
        b.abort();
    }
    let result = result?;
    if !result.error.is_empty() && args.verbose {
        eprintln!("boxyard-runner: {}", result.error);
    }
    Ok(exit_status(&result))
}

/// Streams the output to this process's stdout/stderr from cursor 0, resuming after cut connections.
async fn follow(agent: &mut Agent, exec_id: &str) -> anyhow::Result<ExecResult> {
    let mut cursor = 0u64;
    let mut failures = 0;
    loop {
        let mut f = match OutputFollower::start(agent, exec_id, cursor).await {
            Ok(f) => f,
            Err(status) if failures < 10 => {
                failures += 1;
                tracing::warn!("output stream: {}; resuming from cursor {cursor}", status.message());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(status) => bail!("lost the output stream: {}", status.message()),
        };
        loop {
            match f.next().await {
                Ok(Some(OutputEvent::Data { stream, data, .. })) => {
                    let written = if stream == boxyard_proto::agent::Stream::Stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&data).and_then(|_| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&data).and_then(|_| o.flush())
                    };
                    written.context("write output")?;
                    cursor = f.cursor;
                    f.ack(cursor).await;
                    failures = 0;
                }
                Ok(Some(OutputEvent::Exit(r))) => return Ok(r),
                Ok(None) | Err(_) => break,
            }
        }
    }
}
