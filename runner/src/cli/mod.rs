//! Command-line interface of `boxyard-runner`.

mod bench;
mod bench_output;
mod serve;
mod units;
mod vm_run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use boxyard_runner::launch::GuestImage;
use boxyard_runner::vm::cgroup::CgroupRoot;
use boxyard_runner::vm::ids::{IdPool, parse_range};
use boxyard_runner::vm::kvm::KvmBackend;
use boxyard_runner::vm::qemu::{Accel, Machine, QemuBackend};

/// Exit status when the runner itself failed (not the command), as `docker run` does.
pub const EXIT_RUNNER_ERROR: u8 = 125;

#[derive(Parser, Debug)]
#[command(
    name = "boxyard-runner",
    version,
    about = "The Boxyard runner agent: boots box microVMs and runs commands in them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the runner agent: serve the runner API (gRPC over TLS), keep boxes and their executions' output logs in
    /// the state directory, re-adopt boxes that outlived an earlier runner process.
    Serve(Box<serve::ServeArgs>),
    /// Benchmarks of the execution output path (they print numbers; there are no pass/fail thresholds).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Drive a single VM by hand (development and diagnostics).
    #[command(subcommand)]
    Vm(Box<VmCommand>),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Execution log append and replay-from-cursor throughput.
    Log(bench_output::LogBenchArgs),
    /// End-to-end attach throughput of a command writing N bytes (local backend), with the runner's peak RSS.
    Attach(bench_output::AttachBenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Boot a VM, run one command in it, stream its output, exit with its exit code, tear the VM down.
    ///
    /// Exit status: the command's own; 128+N if a signal N killed it; 124 if --timeout fired; 125 if the runner
    /// failed.
    Run(vm_run::RunArgs),
    /// Measure boot time to agent ready and exec round trips (`--backend qemu|kvm`); prints medians and p90.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelArg {
    /// KVM when the CPU has hardware virtualization (vmx/svm), TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MachineArg {
    Microvm,
    Q35,
}

/// Options of commands that boot one VM by hand: the guest options and the VM's size.
#[derive(Args, Debug, Clone)]
pub struct VmOptions {
    #[command(flatten)]
    pub guest: GuestOptions,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Memory in MiB.
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
}

/// Options shared by every command that boots VMs: guest artifacts and the QEMU backend.
#[derive(Args, Debug, Clone)]
pub struct GuestOptions {
    /// Directory with the guest kernel and initramfs (scripts/build-guest.sh output).
    #[arg(long, env = "BOXYARD_GUEST_DIR", default_value = "build/guest/current")]
    pub guest_dir: PathBuf,
    /// Guest kernel (overrides --guest-dir).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Guest initramfs (overrides --guest-dir).
    #[arg(long)]
    pub initramfs: Option<PathBuf>,
    /// Read-only ext4 root filesystem image (scripts/build-rootfs.sh output).
    #[arg(long, env = "BOXYARD_ROOTFS", default_value = "build/rootfs/busybox.ext4")]
    pub rootfs: PathBuf,
    /// CPU acceleration.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// QEMU machine type.
    #[arg(long, value_enum, default_value = "microvm")]
    pub machine: MachineArg,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// The `boxyard-vmm` binary of the kvm backend (default: beside this binary).
    #[arg(long, env = "BOXYARD_VMM")]
    pub vmm_binary: Option<PathBuf>,
    /// kvm backend: the uids (each also the gid) the VMMs run as, FIRST-LAST; each live VM gets its own.
    #[arg(long, value_name = "FIRST-LAST", default_value = "1900000000-1900065535")]
    pub vm_id_range: String,
    /// kvm backend, DEVELOPMENT ONLY: run the VMMs without their jail (as root, seeing the host's files).
    #[arg(long)]
    pub no_vm_jail: bool,
    /// kvm backend: the cgroup v2 directory under which each VM gets its cgroup with memory, CPU and task limits
    /// (default: `vms` beside the runner's own cgroup, the runner moving itself into a `runner` leaf; needs cgroup v2
    /// with the memory, cpu and pids controllers delegated, e.g. systemd's Delegate=yes).
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// kvm backend: no per-VM cgroups (VMs run without memory, CPU and task limits; for hosts without cgroup v2).
    #[arg(long, conflicts_with = "cgroup_root")]
    pub no_vm_cgroups: bool,
    /// Seconds to wait for the guest agent after starting the VM.
    #[arg(long, default_value_t = 60)]
    pub boot_timeout: u64,
    /// Extra kernel command-line words (repeatable), e.g. boxyard.debug.
    #[arg(long = "kernel-arg")]
    pub kernel_args: Vec<String>,
}

impl GuestOptions {
    pub fn backend(&self) -> QemuBackend {
        let detected = QemuBackend::detect();
        QemuBackend {
            binary: self.qemu.clone(),
            accel: match self.accel {
                AccelArg::Auto => detected.accel,
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            },
            machine: match self.machine {
                MachineArg::Microvm => Machine::Microvm,
                MachineArg::Q35 => Machine::Q35,
            },
            tsc_khz: boxyard_runner::hostcaps::tsc_khz(),
        }
    }

    /// The kvm backend (our own monitor, `boxyard-vmm`).
    pub fn kvm_backend(&self) -> anyhow::Result<KvmBackend> {
        if !boxyard_runner::hostcaps::hardware_virtualization() {
            tracing::warn!(
                "kvm backend without hardware virtualization (no vmx/svm): a software /dev/kvm cannot boot the guest"
            );
        }
        let mut backend = match &self.vmm_binary {
            Some(p) => KvmBackend::new(p.clone()),
            None => KvmBackend::beside_current_exe()
                .ok_or_else(|| anyhow::anyhow!("no boxyard-vmm beside this binary: build it or pass --vmm-binary"))?,
        };
        if self.no_vm_jail {
            tracing::warn!(
                "WARNING: --no-vm-jail: the VMMs run as root without their jail and see the host's files \
                 (development only)"
            );
            backend.jail = None;
        } else {
            backend.jail = Some(IdPool::new(parse_range(&self.vm_id_range)?));
        }
        if self.no_vm_cgroups {
            tracing::warn!("WARNING: --no-vm-cgroups: VMs run without cgroup memory, CPU and task limits");
        } else {
            let root = CgroupRoot::prepare(self.cgroup_root.as_deref())?;
            tracing::info!(cgroup_root = %root.path().display(), "per-VM cgroups");
            backend.cgroups = Some(root);
        }
        Ok(backend)
    }

    /// `--backend auto`: the kvm backend where the CPU has hardware virtualization, /dev/kvm exists and
    /// boxyard-vmm is available; QEMU otherwise (TCG without hardware virtualization).
    pub fn auto_backend(&self) -> std::sync::Arc<dyn boxyard_runner::vm::VmBackend> {
        if boxyard_runner::hostcaps::hardware_virtualization() && std::path::Path::new("/dev/kvm").exists() {
            match self.kvm_backend() {
                Ok(b) => return std::sync::Arc::new(b),
                Err(e) => tracing::warn!("backend auto: {e:#}; using QEMU"),
            }
        }
        std::sync::Arc::new(self.backend())
    }

    pub fn image(&self) -> GuestImage {
        let from_dir = GuestImage::from_dir(&self.guest_dir);
        GuestImage {
            kernel: self.kernel.clone().unwrap_or(from_dir.kernel),
            initramfs: self.initramfs.clone().unwrap_or(from_dir.initramfs),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Bench(BenchCommand::Log(args)) => {
            tokio::task::spawn_blocking(move || bench_output::log(args)).await?.map(|_| 0)
        }
        Command::Bench(BenchCommand::Attach(args)) => bench_output::attach(args).await.map(|_| 0),
        Command::Vm(vm) => match *vm {
            VmCommand::Run(args) => vm_run::run(args).await,
            VmCommand::Bench(args) => bench::run(args).await.map(|_| 0),
        },
    }
}
