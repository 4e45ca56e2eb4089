//! Booting a VM and connecting to its guest agent, as one step with one deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::{self, Agent};
use crate::vm::{Vm, VmBackend, VmError, VmSpec, VmStatus};

/// The guest's boot artifacts (from scripts/build-guest.sh).
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs with the guest agent.
    pub initramfs: PathBuf,
}

impl GuestImage {
    /// The artifacts in a build directory (`vmlinuz`, `initramfs.cpio` or `initramfs.cpio.gz`).
    pub fn from_dir(dir: &Path) -> Self {
        let plain = dir.join("initramfs.cpio");
        let initramfs = if plain.exists() { plain } else { dir.join("initramfs.cpio.gz") };
        GuestImage { kernel: dir.join("vmlinuz"), initramfs }
    }

    /// `$BOXYARD_GUEST_DIR`, else `build/guest/current` below the current directory.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("BOXYARD_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("build/guest/current"))
    }
}

/// Why a VM could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The backend could not create or start it.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// It stopped before its agent answered.
    #[error("the VM stopped while booting ({detail}); the guest console is in {console}")]
    DiedDuringBoot {
        /// How it ended.
        detail: String,
        /// Its console log.
        console: PathBuf,
    },
    /// Its agent did not answer in time.
    #[error("{error}; the guest console is in {console}")]
    Agent {
        /// The connection error.
        error: agent::ConnectError,
        /// Its console log.
        console: PathBuf,
    },
}

/// A running VM with a connected agent.
pub struct Launched {
    /// The VM.
    pub vm: Box<dyn Vm>,
    /// Its agent.
    pub agent: Agent,
    /// From start to the agent answering its first session.
    pub boot_time: Duration,
}

/// Creates and starts a VM, then waits (up to `boot_timeout`) for its agent. On failure the VM is killed.
pub async fn launch(backend: &dyn VmBackend, spec: VmSpec, boot_timeout: Duration) -> Result<Launched, LaunchError> {
    let console = spec.console_log();
    let socket = spec.agent_socket();
    let mut vm = backend.create(spec).await?;
    let t0 = Instant::now();
    vm.start().await?;
    let connect = agent::connect(&socket, boot_timeout);
    tokio::pin!(connect);
    let result = loop {
        tokio::select! {
            r = &mut connect => break r.map_err(|error| LaunchError::Agent { error, console: console.clone() }),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let VmStatus::Stopped { detail } = vm.status().await {
                    break Err(LaunchError::DiedDuringBoot { detail, console: console.clone() });
                }
            }
        }
    };
    match result {
        Ok(agent) => Ok(Launched { vm, agent, boot_time: t0.elapsed() }),
        Err(e) => {
            let _ = vm.kill().await;
            Err(e)
        }
    }
}
