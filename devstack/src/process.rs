//! Processes of the stack: starting one with its output in a log file and waiting until it writes its address file,
//! either owned by the caller ([`Process`], ended on drop: tests) or detached in its own session with a pid file
//! ([`start_detached`], [`pid_alive`], [`stop_pid_file`]: `boxyard dev`). Also clean-up of whatever a runner left
//! behind (its boxes' VMs and local agents, found by a path in their command line) and free loopback ports.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::IoContext;
use crate::{Error, Result};

/// A free TCP port on 127.0.0.1 (free when asked: another process may take it before it is used).
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ctx(|| "binding 127.0.0.1:0 for a free port".into())
}

/// Whether this process runs as root (PostgreSQL then runs as the `postgres` user).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to `pid`; false when there is no such process (or it is not ours).
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; a stale pid at worst hits nothing.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How to wait for a starting process.
#[derive(Debug, Clone)]
pub struct Startup {
    /// What it is, for errors ("the control plane").
    pub what: String,
    /// Its log file (stdout and stderr, appended).
    pub log: PathBuf,
    /// The file it writes once serving (it is removed before the start).
    pub ready_file: PathBuf,
    /// How long to wait for `ready_file`.
    pub timeout: Duration,
    /// How many lines of the log an error quotes.
    pub log_lines: usize,
}

fn open_log(log: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(log).ctx(|| format!("opening {}", log.display()))
}

fn spawn_logged(cmd: &mut Command, s: &Startup) -> Result<Child> {
    let _ = std::fs::remove_file(&s.ready_file);
    let log = open_log(&s.log)?;
    let log2 = log.try_clone().ctx(|| format!("opening {}", s.log.display()))?;
    cmd.stdin(Stdio::null()).stdout(log2).stderr(log).spawn().ctx(|| format!("starting {}", s.what))
}

/// Polls until `s.ready_file` exists; `exited` says whether (and how) the process ended meanwhile.
fn wait_ready(s: &Startup, mut exited: impl FnMut() -> Option<String>) -> Result<()> {
    let deadline = Instant::now() + s.timeout;
    while !s.ready_file.exists() {
        if let Some(status) = exited() {
            return Err(Error::ExitedDuringStartup {
                what: s.what.clone(),
                status,
                log: s.log.clone(),
                log_tail: log_tail(&s.log, s.log_lines),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::StartTimeout {
                what: s.what.clone(),
                timeout: s.timeout,
                log: s.log.clone(),
                log_tail: log_tail(&s.log, s.log_lines),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A child process owned by the caller, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` (stdin closed, output appended to `s.log`) and returns once it wrote `s.ready_file`; a process
    /// that exits or takes longer than `s.timeout` is an error quoting its log (and is killed).
    pub fn start(cmd: &mut Command, s: &Startup) -> Result<Process> {
        let child = spawn_logged(cmd, s)?;
        let mut p = Process { child: Some(child), log: s.log.clone() };
        let ready = wait_ready(s, || match p.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(format!("cannot wait: {e}")),
            _ => None,
        });
        ready.map(|()| p)
    }

    /// Its process id (None once killed or terminated).
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and waits for it (no chance to clean up). Does nothing when already ended.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for it to exit; its exit status (None when already ended).
    pub fn terminate(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut c) = self.child.take() else { return Ok(None) };
        signal(c.id() as i32, libc::SIGTERM);
        c.wait().map(Some).ctx(|| "waiting for a terminated process".into())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cmd` detached (its own session, so it outlives the caller and its terminal; output appended to `s.log`),
/// writes its pid to `pid_file`, and returns once it wrote `s.ready_file`.
pub fn start_detached(cmd: &mut Command, s: &Startup, pid_file: &Path) -> Result<u32> {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = spawn_logged(cmd, s)?;
    let pid = child.id();
    std::fs::write(pid_file, pid.to_string()).ctx(|| format!("writing {}", pid_file.display()))?;
    // Not waited for once serving: it outlives us. Until then try_wait tells an exit (kill(0) would see a zombie as
    // alive).
    wait_ready(s, || match child.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        Ok(None) => None,
        Err(e) => Some(format!("cannot wait: {e}")),
    })?;
    Ok(pid)
}

/// The pid recorded in `pid_file` when that process is alive (a zombie, killed but not yet reaped by its parent,
/// is not: `boxyard dev up` right after a `kill -9` must start the process again).
pub fn pid_alive(pid_file: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    (signal(pid, 0) && !is_zombie(pid)).then_some(pid)
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in /proc/PID/stat).
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the state follows the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) == Some('Z')
}

/// Stops the process of `pid_file` (SIGTERM, then SIGKILL after `grace`) and removes the file; the pid when it was
/// running.
pub fn stop_pid_file(pid_file: &Path, grace: Duration) -> Option<i32> {
    let pid = pid_alive(pid_file);
    if let Some(pid) = pid {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while signal(pid, 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
    pid
}

/// Every process (but this one) whose command line mentions `needle`: how a runner's boxes are found (their QEMU
/// processes and local agents name paths in the runner's state directory).
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(needle))
        })
        .collect()
}

/// Sends `sig` to every process whose command line mentions `needle`.
pub fn signal_mentioning(needle: &str, sig: i32) {
    for pid in pids_mentioning(needle) {
        signal(pid, sig);
    }
}

/// Ends every process whose command line mentions `needle`: SIGTERM, then SIGKILL to what is left after `grace`.
pub fn end_mentioning(needle: &str, grace: Duration) {
    signal_mentioning(needle, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while !pids_mentioning(needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_mentioning(needle, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(dir: &Path, ready: &str, timeout_ms: u64) -> Startup {
        Startup {
            what: "the test process".into(),
            log: dir.join("p.log"),
            ready_file: dir.join(ready),
            timeout: Duration::from_millis(timeout_ms),
            log_lines: 2,
        }
    }

    /// `sleep` under a name unique to this test process (a symlink in `dir`), to find it by command line.
    fn named_sleep(dir: &Path, tag: &str) -> PathBuf {
        let link = dir.join(format!("boxyard-devstack-{tag}-{}", std::process::id()));
        std::os::unix::fs::symlink(program_path("sleep"), &link).unwrap();
        link
    }

    /// The processes mentioning `needle` once there are `n` (a process in the middle of an exec shows an empty
    /// command line for a moment), or what there is after 5 s.
    fn wait_mentioning(needle: &str, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = pids_mentioning(needle);
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_killed_process_not_yet_reaped_is_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(program_path("sleep")).arg("30").spawn().unwrap();
        let pid_file = dir.path().join("p.pid");
        std::fs::write(&pid_file, child.id().to_string()).unwrap();
        assert_eq!(pid_alive(&pid_file), Some(child.id() as i32));
        signal(child.id() as i32, libc::SIGKILL);
        // Not waited for yet: a zombie, which kill(pid, 0) still finds.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_zombie(child.id() as i32) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(signal(child.id() as i32, 0), "the zombie is still there");
        assert_eq!(pid_alive(&pid_file), None);
        child.wait().unwrap();
    }

    fn program_path(name: &str) -> PathBuf {
        ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).unwrap()
    }

    #[test]
    fn a_process_is_ready_once_it_writes_its_file_and_is_found_by_its_command_line() {
        let d = tempfile::tempdir().unwrap();
        let sleep = named_sleep(d.path(), "ready");
        let script = format!("echo starting; touch {}; exec \"$0\" 30", d.path().join("ready").display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).arg(&sleep);
        let mut p = Process::start(&mut cmd, &startup(d.path(), "ready", 10_000)).unwrap();
        assert_eq!(p.log(), "starting\n");
        let pid = p.id().unwrap() as i32;
        let needle = sleep.display().to_string();
        assert_eq!(wait_mentioning(&needle, 1), vec![pid]);
        p.kill();
        assert!(p.id().is_none());
        assert!(pids_mentioning(&needle).is_empty());
    }

    #[test]
    fn an_exit_during_start_up_is_an_error_quoting_the_end_of_the_log() {
        let d = tempfile::tempdir().unwrap();
        let e = Process::start(
            Command::new("sh").args(["-c", "echo one; echo two; echo three; exit 3"]),
            &startup(d.path(), "never", 10_000),
        )
        .unwrap_err();
        match &e {
            Error::ExitedDuringStartup { status, log_tail, .. } => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(log_tail, "two\nthree");
            }
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn a_slow_start_times_out() {
        let d = tempfile::tempdir().unwrap();
        let e = Process::start(Command::new("sleep").arg("30"), &startup(d.path(), "never", 200)).unwrap_err();
        assert!(matches!(e, Error::StartTimeout { .. }), "{e}");
    }

    #[test]
    fn a_detached_process_is_stopped_through_its_pid_file() {
        let d = tempfile::tempdir().unwrap();
        let ready = d.path().join("ready");
        let script = format!("touch {}; exec sleep 30", ready.display());
        let pid_file = d.path().join("p.pid");
        let pid =
            start_detached(Command::new("sh").args(["-c", &script]), &startup(d.path(), "ready", 10_000), &pid_file)
                .unwrap();
        assert_eq!(pid_alive(&pid_file), Some(pid as i32));
        // Our own child stays a zombie (alive to kill(0)) until reaped, so the grace runs out here; `boxyard dev down`
        // is not the parent of what `up` started.
        assert_eq!(stop_pid_file(&pid_file, Duration::from_millis(200)), Some(pid as i32));
        assert!(!pid_file.exists());
        assert_eq!(pid_alive(&pid_file), None);
    }

    #[test]
    fn end_mentioning_terminates_every_match() {
        let d = tempfile::tempdir().unwrap();
        let sleep = named_sleep(d.path(), "end");
        let mut kids: Vec<Child> = (0..2).map(|_| Command::new(&sleep).arg("30").spawn().unwrap()).collect();
        let needle = sleep.display().to_string();
        assert_eq!(wait_mentioning(&needle, 2).len(), 2);
        end_mentioning(&needle, Duration::from_secs(5));
        for k in &mut kids {
            assert!(!k.wait().unwrap().success());
        }
        assert!(pids_mentioning(&needle).is_empty());
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port().unwrap();
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
