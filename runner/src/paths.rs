//! Every path of the runner's state directory, in one place: typed helpers instead of `.join("...")` at each use.
//!
//! ```text
//! STATE_DIR/                                   StatePaths
//!   runner.addr  api-token  registration.json
//!   tls/dev-cert.pem  tls/dev-key.pem
//!   snapshots/<hex>.ext4                       (crate::snapshots)
//!   boxes/<box id>/                            BoxPaths
//!     box.json  rw.ext4
//!     vm/                                      VmPaths (a VM's runtime files; also any VM run directory)
//!       agent.sock console.log guest.pid guest.log qemu.pid qemu.log qmp.sock
//!     executions/<execution id>/               ExecPaths
//!       exec.json  result.json  killed  log/
//!   boxes/.trash-<box id>-<nonce>/             a box being deleted
//! ```

use std::path::{Path, PathBuf};

/// The runner's state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePaths {
    root: PathBuf,
}

/// Prefix of a box directory moved aside to be deleted.
pub const TRASH_PREFIX: &str = ".trash-";

impl StatePaths {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StatePaths { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where boxes live.
    pub fn boxes(&self) -> PathBuf {
        self.root.join("boxes")
    }

    /// One box's directory.
    pub fn box_dir(&self, box_id: &str) -> BoxPaths {
        BoxPaths::new(self.boxes().join(box_id))
    }

    /// Where a box directory is moved before it is deleted (`nonce` keeps two deletions of one id apart).
    pub fn trash(&self, box_id: &str, nonce: &str) -> PathBuf {
        self.boxes().join(format!("{TRASH_PREFIX}{box_id}-{nonce}"))
    }

    /// The snapshot image cache.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The address the runner API listens on (a JSON string), written once the runner serves.
    pub fn addr_file(&self) -> PathBuf {
        self.root.join("runner.addr")
    }

    /// The runner's own log, where tests and benchmarks put it.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("runner.log")
    }

    /// The token the control plane must present to the runner API.
    pub fn api_token(&self) -> PathBuf {
        self.root.join("api-token")
    }

    /// The runner's registration with its control plane.
    pub fn registration(&self) -> PathBuf {
        self.root.join("registration.json")
    }

    /// The development TLS certificate (`--tls-dev`).
    pub fn dev_cert(&self) -> PathBuf {
        self.root.join("tls").join("dev-cert.pem")
    }

    /// The development TLS key (`--tls-dev`).
    pub fn dev_key(&self) -> PathBuf {
        self.root.join("tls").join("dev-key.pem")
    }
}

/// One box's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxPaths {
    dir: PathBuf,
}

impl BoxPaths {
    /// The box directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BoxPaths { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The box's record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("box.json")
    }

    /// The box's writable disk.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("rw.ext4")
    }

    /// The VM's run directory.
    pub fn vm(&self) -> VmPaths {
        VmPaths::new(self.dir.join("vm"))
    }

    /// Where the box's executions live.
    pub fn executions(&self) -> PathBuf {
        self.dir.join("executions")
    }

    /// One execution's directory.
    pub fn execution(&self, id: &str) -> ExecPaths {
        ExecPaths::new(self.executions().join(id))
    }
}

/// One execution's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecPaths {
    dir: PathBuf,
}

impl ExecPaths {
    /// The execution directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ExecPaths { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What was asked.
    pub fn meta(&self) -> PathBuf {
        self.dir.join("exec.json")
    }

    /// The final result.
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }

    /// Present once the execution was killed.
    pub fn killed(&self) -> PathBuf {
        self.dir.join("killed")
    }

    /// The execution output log's directory.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
}

/// A VM's run directory (its runtime files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmPaths {
    dir: PathBuf,
}

impl VmPaths {
    /// The run directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VmPaths { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest agent's unix socket.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The guest's serial console output.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// A writable disk created beside a VM that has no box (`vm run`, benchmarks).
    pub fn scratch_disk(&self) -> PathBuf {
        self.dir.join("rw.ext4")
    }

    /// The local backend's agent process id.
    pub fn guest_pid(&self) -> PathBuf {
        self.dir.join("guest.pid")
    }

    /// The local backend's agent output.
    pub fn guest_log(&self) -> PathBuf {
        self.dir.join("guest.log")
    }

    /// QEMU's process id.
    pub fn qemu_pid(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }

    /// QEMU's own output.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    /// QEMU's control socket (QMP).
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// boxyard-vmm's process id.
    pub fn vmm_pid(&self) -> PathBuf {
        self.dir.join("vmm.pid")
    }

    /// boxyard-vmm's own messages.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// boxyard-vmm's control socket.
    pub fn vmm_control_socket(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_documented_one() {
        let s = StatePaths::new("/s");
        let b = s.box_dir("b1");
        assert_eq!(b.record(), Path::new("/s/boxes/b1/box.json"));
        assert_eq!(b.vm().agent_socket(), Path::new("/s/boxes/b1/vm/agent.sock"));
        let e = b.execution("ex-1");
        assert_eq!(e.meta(), Path::new("/s/boxes/b1/executions/ex-1/exec.json"));
        assert_eq!(e.log(), Path::new("/s/boxes/b1/executions/ex-1/log"));
        assert_eq!(s.trash("b1", "ab"), Path::new("/s/boxes/.trash-b1-ab"));
        assert_eq!(s.dev_cert(), Path::new("/s/tls/dev-cert.pem"));
    }
}
