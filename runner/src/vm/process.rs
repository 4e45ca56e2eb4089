//! The host process behind a VM: one we spawned (a [`Child`]) or one we re-adopted after a runner restart (a pid
//! read from the VM's pid file, which is not our child).
//!
//! An adopted pid is trusted only while `/proc/<pid>/cmdline` still names the VM's run directory, so a recycled pid
//! is never mistaken for the VM.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{VmError, VmStatus};

/// How often an adopted process is polled for its end.
const POLL: Duration = Duration::from_millis(50);

enum Handle {
    Child(Child),
    Adopted { pid: i32, marker: String },
}

/// A running (or ended) VM process.
pub struct VmProcess {
    handle: Option<Handle>,
    ended: Option<String>,
}

/// Whether `pid` is a live (not zombie) process whose command line contains `marker`.
pub fn is_live(pid: i32, marker: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the first field after the parenthesised command name.
    let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
}

/// Reads a pid file.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&p: &i32| p > 1)
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

impl VmProcess {
    /// Spawns `cmd` in its own session, so that it outlives the runner (a runner restart does not stop boxes).
    pub fn spawn(mut cmd: Command, program: &Path) -> Result<Self, VmError> {
        cmd.kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| VmError::Spawn { program: program.display().to_string(), source })?;
        Ok(VmProcess { handle: Some(Handle::Child(child)), ended: None })
    }

    /// Takes over a process left by an earlier runner, if it still runs.
    pub fn adopt(pid: i32, marker: &str) -> Option<Self> {
        is_live(pid, marker)
            .then(|| VmProcess { handle: Some(Handle::Adopted { pid, marker: marker.to_string() }), ended: None })
    }

    /// The process id, while known.
    pub fn pid(&self) -> Option<u32> {
        match &self.handle {
            Some(Handle::Child(c)) => c.id(),
            Some(Handle::Adopted { pid, .. }) => Some(*pid as u32),
            None => None,
        }
    }

    /// How the process ended, if it has (does not block).
    pub fn poll_exit(&mut self) -> Option<String> {
        if self.ended.is_none() {
            match &mut self.handle {
                Some(Handle::Child(c)) => {
                    if let Ok(Some(status)) = c.try_wait() {
                        self.ended = Some(describe(status));
                    }
                }
                Some(Handle::Adopted { pid, marker }) if !is_live(*pid, marker) => {
                    self.ended = Some("ended (its exit status went to the previous runner process)".into());
                }
                Some(Handle::Adopted { .. }) => {}
                None => {}
            }
            if self.ended.is_some() {
                self.handle = None;
            }
        }
        self.ended.clone()
    }

    /// Waits up to `timeout` for the process to end.
    pub async fn wait(&mut self, timeout: Duration) -> Option<String> {
        match &mut self.handle {
            Some(Handle::Child(c)) => {
                if let Ok(Ok(status)) = tokio::time::timeout(timeout, c.wait()).await {
                    self.ended = Some(describe(status));
                    self.handle = None;
                }
            }
            Some(Handle::Adopted { .. }) => {
                let deadline = tokio::time::Instant::now() + timeout;
                while self.poll_exit().is_none() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                }
            }
            None => {}
        }
        self.poll_exit()
    }

    /// Sends a signal (no-op once ended).
    pub fn signal(&mut self, sig: Signal) {
        if self.poll_exit().is_none()
            && let Some(pid) = self.pid()
        {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Kills the process and waits for it to end.
    pub async fn kill(&mut self) -> Result<(), VmError> {
        if let Some(Handle::Child(c)) = &mut self.handle {
            let _ = c.start_kill();
            let status = c.wait().await?;
            self.ended = Some(describe(status));
            self.handle = None;
            return Ok(());
        }
        self.signal(Signal::SIGKILL);
        if self.wait(Duration::from_secs(10)).await.is_none() {
            return Err(VmError::Control("the VM process did not end within 10 s of SIGKILL".into()));
        }
        Ok(())
    }

    /// Whether the process was seen ending.
    pub fn ended(&self) -> bool {
        self.ended.is_some()
    }
}

/// The status of a VM's process slot, and whether this call is the first to see it ended (the caller then removes
/// the VM's runtime files once).
pub fn slot_status(slot: &mut Option<VmProcess>) -> (VmStatus, bool) {
    let Some(p) = slot.as_mut() else { return (VmStatus::Created, false) };
    let was_running = !p.ended();
    match p.poll_exit() {
        Some(detail) => (VmStatus::Stopped { detail }, was_running),
        None => (p.pid().map_or(VmStatus::Created, |pid| VmStatus::Running { pid }), false),
    }
}
