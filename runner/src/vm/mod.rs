//! The VM backend seam: one trait for "something that runs a box's VM", so the runner does not care how.
//!
//! Backends:
//! - [`qemu`]: one `qemu-system-x86_64` process per VM (KVM acceleration where the host has hardware
//!   virtualization, TCG otherwise). Runs everywhere.
//! - [`local`]: **test and development only** — runs the guest agent as a host process with no VM and no
//!   isolation, so the runner's logic can be tested in seconds.
//! - [`kvm`]: one `boxyard-vmm` process per VM (our own KVM monitor, `vmm/`), driven through its control socket
//!   ([`vmm_control`]), jailed under its own id ([`ids`]) and in its own cgroup v2 ([`cgroup`]).
//!
//! A VM's runtime files (agent socket, control socket, console log, pid file) live in its own directory
//! ([`VmSpec::run_dir`]), so that a restarted runner can find and re-adopt VMs that outlived it.

pub mod cgroup;
pub mod ids;
pub mod kvm;
pub mod local;
pub mod process;
pub mod qemu;
pub mod vmm_control;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything needed to boot one VM.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Identifies the VM in process names and messages.
    pub id: String,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The guest initramfs.
    pub initramfs: PathBuf,
    /// Read-only ext4 root image (first disk; may be shared by many VMs).
    pub root_image: PathBuf,
    /// The box's writable disk for the overlay's upper layer; None: writes live in guest memory only.
    pub writable_disk: Option<PathBuf>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Directory for the VM's runtime files; must exist and be private to this VM.
    pub run_dir: PathBuf,
    /// Extra kernel command-line words (e.g. `boxyard.debug`).
    pub extra_kernel_args: Vec<String>,
}

impl VmSpec {
    /// The unix socket the guest agent is reachable on.
    pub fn agent_socket(&self) -> PathBuf {
        self.paths().agent_socket()
    }

    /// The VM's runtime files.
    pub fn paths(&self) -> crate::paths::VmPaths {
        crate::paths::VmPaths::new(&self.run_dir)
    }

    /// The guest's serial console output.
    pub fn console_log(&self) -> PathBuf {
        self.paths().console_log()
    }

    /// Checks that the files a real VM boots from exist, with errors that say what to fix.
    pub fn validate_boot_files(&self) -> Result<(), VmError> {
        let file = |what: &'static str, p: &Path, hint: &'static str| -> Result<(), VmError> {
            if p.is_file() { Ok(()) } else { Err(VmError::MissingFile { what, path: p.to_path_buf(), hint }) }
        };
        file("kernel", &self.kernel, "build it with scripts/build-guest.sh or pass --kernel")?;
        file("initramfs", &self.initramfs, "build it with scripts/build-guest.sh or pass --initramfs")?;
        file("root image", &self.root_image, "build one with scripts/build-rootfs.sh or pass --rootfs")?;
        if let Some(d) = &self.writable_disk {
            file("writable disk", d, "it is created when the box is created")?;
        }
        Ok(())
    }

    /// Checks the sizes and the run directory, with errors that say what to fix.
    pub fn validate(&self) -> Result<(), VmError> {
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(VmError::InvalidSpec(format!("vcpus must be between 1 and 64, got {}", self.vcpus)));
        }
        if self.memory_mib < 64 || self.memory_mib > 256 * 1024 {
            return Err(VmError::InvalidSpec(format!(
                "memory must be between 64 MiB and 256 GiB, got {} MiB",
                self.memory_mib
            )));
        }
        if !self.run_dir.is_dir() {
            return Err(VmError::InvalidSpec(format!("run directory {} does not exist", self.run_dir.display())));
        }
        Ok(())
    }
}

/// What a VM is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmStatus {
    /// Created, not started.
    Created,
    /// Its process is alive.
    Running {
        /// Its process id.
        pid: u32,
    },
    /// It has ended; `detail` says how (exit status, signal) when known.
    Stopped {
        /// How it ended.
        detail: String,
    },
}

/// An error of a VM backend.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file the VM boots from is missing.
    #[error("{what} not found at {path}: {hint}")]
    MissingFile {
        /// What the file is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
    /// The spec is out of range.
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// The VM's program could not be started.
    #[error("cannot start {program}: {source}; is it installed (scripts/setup.sh)?")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// The VM's process exited while starting.
    #[error("the VM exited during start-up ({detail}); see {log}")]
    EarlyExit {
        /// How it ended.
        detail: String,
        /// Its log.
        log: PathBuf,
    },
    /// The VM's control channel failed.
    #[error("VM control channel error: {0}")]
    Control(String),
    /// The VM is not running.
    #[error("the VM is not running")]
    NotRunning,
    /// The backend cannot do this.
    #[error("the {backend} backend cannot {what}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// A file operation failed.
    #[error("VM I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The VM's cgroup (kvm backend).
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The VM's unprivileged id (kvm backend).
    #[error(transparent)]
    Ids(#[from] ids::IdError),
}

/// A backend that creates VMs.
#[async_trait::async_trait]
pub trait VmBackend: Send + Sync {
    /// A short name for logs and the API ("qemu-tcg", "qemu-kvm", ...).
    fn name(&self) -> String;
    /// Whether VMs boot the spec's kernel and images (and need a writable disk). False for the local backend.
    fn boots_images(&self) -> bool {
        true
    }
    /// Prepares a VM from a spec (validated); nothing runs until [`Vm::start`].
    async fn create(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmError>;
    /// Takes over the VM a previous runner process started with this spec, if it still runs (found through the
    /// pid file in its run directory). None: it is not running.
    async fn adopt(&self, spec: VmSpec) -> Result<Option<Box<dyn Vm>>, VmError>;
}

/// One VM.
#[async_trait::async_trait]
pub trait Vm: Send + Sync {
    /// The spec it was made from.
    fn spec(&self) -> &VmSpec;
    /// Boots the VM. Returns once its process runs; the guest agent becomes reachable on
    /// [`VmSpec::agent_socket`] when the guest has booted.
    async fn start(&mut self) -> Result<(), VmError>;
    /// Asks the guest to power off through the platform (ACPI), waits up to `grace`, then kills.
    /// Callers that hold the agent channel should ask the agent to shut down first (it syncs the disks).
    async fn stop(&mut self, grace: Duration) -> Result<VmStatus, VmError>;
    /// Ends the VM at once.
    async fn kill(&mut self) -> Result<VmStatus, VmError>;
    /// Waits up to `timeout` for the VM to end by itself; returns its status.
    async fn wait(&mut self, timeout: Duration) -> VmStatus;
    /// What it is doing now.
    async fn status(&mut self) -> VmStatus;
    /// Stops the guest's vCPUs (it executes nothing, its devices and memory stay) until [`Vm::resume`].
    async fn pause(&mut self) -> Result<(), VmError> {
        Err(VmError::Unsupported { backend: "this", what: "pause a VM" })
    }
    /// Lets a paused guest run again.
    async fn resume(&mut self) -> Result<(), VmError> {
        Err(VmError::Unsupported { backend: "this", what: "resume a VM" })
    }
    /// The VM monitor's counters (exits, disk and agent-channel bytes, ...), by name; empty where the backend has
    /// none.
    async fn metrics(&mut self) -> Result<Vec<(String, u64)>, VmError> {
        Ok(Vec::new())
    }
}
