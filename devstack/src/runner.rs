//! Runner processes (`boxyard-runner serve`, dev TLS certificate): the command line of one ([`Spec`]), and a runner
//! owned by the caller ([`Runner`]) that can be killed, terminated and restarted on its state directory, and whose
//! boxes (VMs, local agents: they outlive the runner by design) are ended with it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::Result;
use crate::process::{Process, Startup, end_mentioning, signal_mentioning};

/// How to start a runner.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `boxyard-runner` binary.
    pub program: PathBuf,
    /// Its state directory (boxes, executions, `runner.addr`, `tls/`).
    pub state_dir: PathBuf,
    /// Its API address (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// More flags (backend, control plane, join token, capacity, S3).
    pub args: Vec<String>,
    /// `RUST_LOG` for it (None: inherited).
    pub log_filter: Option<String>,
}

impl Spec {
    /// The command.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--listen", &self.listen, "--tls-dev"])
            .args(&self.args);
        if let Some(f) = &self.log_filter {
            c.env("RUST_LOG", f);
        }
        c
    }

    /// The file the runner writes its address to once serving (a JSON string, `host:port`).
    pub fn addr_file(&self) -> PathBuf {
        self.state_dir.join("runner.addr")
    }
}

/// A runner process owned by the caller, logging to `<state dir>/runner.log`. Dropping it kills it and ends its
/// boxes.
#[derive(Debug)]
pub struct Runner {
    spec: Spec,
    process: Option<Process>,
}

impl Runner {
    /// Starts it; returns once it serves.
    pub fn start(spec: Spec) -> Result<Runner> {
        let mut r = Runner { spec, process: None };
        r.restart()?;
        Ok(r)
    }

    /// (Re)starts the process on the same state directory (killing a running one first); returns once it serves.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let s = Startup {
            what: "the runner".into(),
            log: self.log_file(),
            ready_file: self.spec.addr_file(),
            timeout: Duration::from_secs(60),
            log_lines: 200,
        };
        self.process = Some(Process::start(&mut self.spec.command(), &s)?);
        Ok(())
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.spec.state_dir
    }

    /// Its log file.
    pub fn log_file(&self) -> PathBuf {
        self.spec.state_dir.join("runner.log")
    }

    /// Everything it has logged (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::id)
    }

    /// Whether the process runs (was started and not killed or terminated since).
    pub fn is_started(&self) -> bool {
        self.process.is_some()
    }

    /// SIGKILL: the runner gets no chance to clean up (its boxes keep running).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// SIGTERM, and waits for it to exit; its exit status (None when it was not running).
    pub fn terminate(&mut self) -> Result<Option<ExitStatus>> {
        match self.process.take() {
            Some(mut p) => p.terminate(),
            None => Ok(None),
        }
    }

    /// SIGKILL to the runner and to every process of its boxes, as if the host died.
    pub fn kill_host(&mut self) {
        self.kill();
        signal_mentioning(&self.spec.state_dir.display().to_string(), libc::SIGKILL);
    }

    /// Ends the processes of its boxes: SIGTERM (local agents end their executions then), SIGKILL after `grace`.
    pub fn end_boxes(&self, grace: Duration) {
        end_mentioning(&self.spec.state_dir.display().to_string(), grace);
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.kill();
        self.end_boxes(Duration::from_secs(3));
    }
}
