//! Executions: the processes the agent runs for the host, their output rings, stdin, signals and results.
//!
//! An execution outlives any host session: it keeps running, and keeps its unacknowledged output, while the host is
//! away. The host releases it once it has stored the output and the result.

pub mod output;
pub mod reaper;
pub mod spawn;
pub mod users;

mod pump;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boxyard_proto::agent::{ExecRequest, ExecResult, ExecState, Stream, exec_result::Outcome};
use boxyard_proto::signal;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use output::OutputRing;
use reaper::{ExitStatus, Reaper};

/// Default time between SIGTERM and SIGKILL when a timeout fires.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why an execution request or operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("execution {0:?} not found")]
    NotFound(String),
    #[error("execution {0:?} already exists with a different command; choose another exec_id")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

struct StdinState {
    writer: Option<AsyncFd<OwnedFd>>,
    offset: u64,
    tty: bool,
}

/// One execution.
pub struct Exec {
    pub id: String,
    pub argv: Vec<String>,
    pub tty: bool,
    pub output: OutputRing,
    pid: i32,
    stdin: tokio::sync::Mutex<StdinState>,
    pty: Option<OwnedFd>,
    result: watch::Sender<Option<ExecResult>>,
}

impl Exec {
    /// The result, once finished.
    pub fn result(&self) -> Option<ExecResult> {
        self.result.borrow().clone()
    }

    /// Waits for the result.
    pub async fn wait(&self) -> ExecResult {
        let mut rx = self.result.subscribe();
        let r = rx.wait_for(|r| r.is_some()).await.expect("the exec owns its result sender");
        r.clone().expect("checked by wait_for")
    }

    pub fn state(&self) -> ExecState {
        if self.result.borrow().is_some() { ExecState::Finished } else { ExecState::Running }
    }

    /// Sends a signal (name or number) to the execution's process group.
    pub fn signal(&self, name: &str) -> Result<(), ExecError> {
        let num = signal::parse(name).map_err(|e| ExecError::InvalidArgument(e.to_string()))?;
        let sig = Signal::try_from(num).map_err(|_| ExecError::InvalidArgument(format!("unknown signal {name:?}")))?;
        if self.result.borrow().is_some() || self.pid <= 0 {
            return Err(ExecError::FailedPrecondition(format!("execution {:?} has already finished", self.id)));
        }
        killpg(Pid::from_raw(self.pid), sig)
            .or_else(|_| kill(Pid::from_raw(self.pid), sig))
            .map_err(|e| ExecError::FailedPrecondition(format!("could not signal execution {:?}: {e}", self.id)))
    }

    /// Changes the terminal size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError> {
        let Some(pty) = &self.pty else {
            return Err(ExecError::FailedPrecondition(format!(
                "execution {:?} has no terminal; start it with a tty to resize it",
                self.id
            )));
        };
        if rows == 0 || cols == 0 {
            return Err(ExecError::InvalidArgument("rows and cols must be at least 1".into()));
        }
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is our open pty master.
        if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Writes stdin at `offset`; bytes before the current offset were already written and are skipped.
    pub async fn write_stdin(&self, offset: u64, data: &[u8], eof: bool) -> Result<u64, ExecError> {
        let mut st = self.stdin.lock().await;
        if offset > st.offset {
            return Err(ExecError::FailedPrecondition(format!(
                "stdin offset {offset} is ahead of the {} bytes written so far; resend from {}",
                st.offset, st.offset
            )));
        }
        let skip = (st.offset - offset) as usize;
        if skip < data.len() {
            let st = &mut *st;
            let Some(writer) = &st.writer else {
                return Err(ExecError::FailedPrecondition(if st.offset == 0 && !eof {
                    format!("execution {:?} was started without stdin, or its stdin is closed", self.id)
                } else {
                    format!("stdin of execution {:?} is closed", self.id)
                }));
            };
            let mut rest = &data[skip..];
            while !rest.is_empty() {
                let mut guard = writer.writable().await?;
                match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), rest).map_err(std::io::Error::from)) {
                    Ok(Ok(n)) => {
                        rest = &rest[n..];
                        st.offset += n as u64;
                    }
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                        return Err(ExecError::FailedPrecondition(format!(
                            "execution {:?} closed its stdin or has finished",
                            self.id
                        )));
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_would_block) => continue,
                }
            }
        }
        if eof && st.writer.is_some() {
            if st.tty {
                // A terminal has no EOF of its own: send the EOF character (^D) the line discipline understands.
                if let Some(w) = &st.writer {
                    let _ = nix::unistd::write(w.get_ref(), b"\x04");
                }
            }
            st.writer = None;
        }
        Ok(st.offset)
    }

    pub fn info(&self) -> boxyard_proto::agent::ExecInfo {
        let pos = self.output.position();
        boxyard_proto::agent::ExecInfo {
            exec_id: self.id.clone(),
            argv: self.argv.clone(),
            state: self.state() as i32,
            retained_from: pos.retained_from,
            output_end: pos.end,
            result: self.result(),
            tty: self.tty,
        }
    }
}

/// Settings of the execution table.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Unacknowledged output bytes held per execution before the process is back-pressured.
    pub ring_bytes: usize,
    /// The passwd file users are resolved in.
    pub passwd: PathBuf,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig { ring_bytes: 4 << 20, passwd: "/etc/passwd".into() }
    }
}

/// Every execution the agent holds.
pub struct ExecTable {
    execs: Mutex<HashMap<String, Arc<Exec>>>,
    reaper: Reaper,
    config: ExecConfig,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn new_id() -> String {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("the OS random number generator is unavailable");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl ExecTable {
    pub fn new(reaper: Reaper, config: ExecConfig) -> Self {
        ExecTable { execs: Mutex::new(HashMap::new()), reaper, config }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Exec>, ExecError> {
        self.execs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| ExecError::NotFound(id.into()))
    }

    pub fn list(&self) -> Vec<Arc<Exec>> {
        let mut v: Vec<_> = self.execs.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Drops a finished execution.
    pub fn release(&self, id: &str) -> Result<(), ExecError> {
        let mut execs = self.execs.lock().unwrap_or_else(PoisonError::into_inner);
        let exec = execs.get(id).ok_or_else(|| ExecError::NotFound(id.into()))?;
        if exec.result().is_none() {
            return Err(ExecError::FailedPrecondition(format!(
                "execution {id:?} is still running; kill it or wait for it before releasing it"
            )));
        }
        execs.remove(id);
        Ok(())
    }

    /// Starts an execution (or returns the existing one with the same id and command).
    pub fn start(&self, req: ExecRequest) -> Result<Arc<Exec>, ExecError> {
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(ExecError::InvalidArgument("argv is empty: give the command to run".into()));
        }
        if req.argv.iter().any(|a| a.contains('\0'))
            || req.env.iter().any(|(k, v)| k.contains(['\0', '=']) || v.contains('\0'))
        {
            return Err(ExecError::InvalidArgument("argv and env may not contain NUL bytes, nor env names '='".into()));
        }
        let id = if req.exec_id.is_empty() { new_id() } else { req.exec_id.clone() };
        if !valid_id(&id) {
            return Err(ExecError::InvalidArgument(format!(
                "exec_id {id:?} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ -"
            )));
        }
        // Held until the new execution is in the table, so two requests with one id never start two processes.
        let mut execs = self.execs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = execs.get(&id) {
            return if existing.argv == req.argv { Ok(existing.clone()) } else { Err(ExecError::AlreadyExists(id)) };
        }
        let tty = match &req.tty {
            Some(t) if t.rows == 0 || t.cols == 0 || t.rows > 10_000 || t.cols > 10_000 => {
                return Err(ExecError::InvalidArgument("tty rows and cols must be between 1 and 10000".into()));
            }
            Some(t) => Some((t.rows as u16, t.cols as u16)),
            None => None,
        };
        // A user the box does not have is a matter of the box's state (its /etc/passwd), not of the request's shape.
        let identity = users::resolve(&req.user, &self.config.passwd).map_err(|e| match e {
            users::UserError::Unknown(_) => ExecError::FailedPrecondition(e.to_string()),
            users::UserError::Invalid(_) => ExecError::InvalidArgument(e.to_string()),
        })?;
        let cwd = if req.working_dir.is_empty() {
            if identity.home.is_dir() { identity.home.clone() } else { PathBuf::from("/") }
        } else {
            let p = PathBuf::from(&req.working_dir);
            if !p.is_absolute() {
                return Err(ExecError::InvalidArgument(format!(
                    "working directory {:?} must be an absolute path",
                    req.working_dir
                )));
            }
            if !p.is_dir() {
                return Err(ExecError::FailedPrecondition(format!(
                    "working directory {:?} does not exist in the box; create it first or choose another",
                    req.working_dir
                )));
            }
            p
        };
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOME".into(), identity.home.to_string_lossy().into()),
            ("USER".into(), identity.name.clone()),
            ("LOGNAME".into(), identity.name.clone()),
        ];
        if tty.is_some() {
            env.push(("TERM".into(), "xterm-256color".into()));
        }
        let mut extra: Vec<_> = req.env.into_iter().collect();
        extra.sort();
        for (k, v) in extra {
            env.retain(|(ek, _)| *ek != k);
            env.push((k, v));
        }
        let spec = spawn::SpawnSpec { argv: req.argv.clone(), env, cwd, identity, tty, stdin: req.stdin };
        let started = now_ms();
        let output = OutputRing::new(self.config.ring_bytes);
        let (result_tx, _) = watch::channel(None);

        let exec = match spawn::spawn(&self.reaper, &spec) {
            Ok(spawned) => {
                let exec = Arc::new(Exec {
                    id: id.clone(),
                    argv: req.argv,
                    tty: tty.is_some(),
                    output,
                    pid: spawned.pid,
                    stdin: tokio::sync::Mutex::new(StdinState {
                        writer: spawned.stdin.map(crate::fd::register).transpose()?,
                        offset: 0,
                        tty: tty.is_some(),
                    }),
                    pty: spawned.pty,
                    result: result_tx,
                });
                let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
                let grace =
                    if req.kill_grace_ms > 0 { Duration::from_millis(req.kill_grace_ms) } else { DEFAULT_KILL_GRACE };
                let streams = std::iter::once((Stream::Stdout, spawned.stdout))
                    .chain(spawned.stderr.map(|fd| (Stream::Stderr, fd)))
                    .collect();
                tokio::spawn(supervise(exec.clone(), spawned.status, streams, timeout, grace, started));
                exec
            }
            Err(err) => {
                // The process could not start: report it the way a shell would (127 not found, 126 not runnable),
                // with the reason on stderr and in the result.
                let code = match err.kind() {
                    std::io::ErrorKind::NotFound => 127,
                    _ => 126,
                };
                let message = match err.kind() {
                    std::io::ErrorKind::NotFound => format!("{}: command not found", spec.argv[0]),
                    _ => format!("{}: cannot run: {err}", spec.argv[0]),
                };
                output.append(Stream::Stderr, format!("boxyard: {message}\n").as_bytes());
                let end = output.position().end;
                output.close();
                let exec = Arc::new(Exec {
                    id: id.clone(),
                    argv: req.argv,
                    tty: tty.is_some(),
                    output,
                    pid: 0,
                    stdin: tokio::sync::Mutex::new(StdinState { writer: None, offset: 0, tty: false }),
                    pty: None,
                    result: result_tx,
                });
                exec.result.send_replace(Some(ExecResult {
                    exec_id: id.clone(),
                    outcome: Some(Outcome::ExitCode(code)),
                    timed_out: false,
                    error: message,
                    output_end: end,
                    started_unix_ms: started,
                    finished_unix_ms: now_ms(),
                }));
                exec
            }
        };
        execs.insert(id, exec.clone());
        Ok(exec)
    }
}

/// Drives one execution to its end: output pumps, timeout, exit status, result.
async fn supervise(
    exec: Arc<Exec>,
    mut status: tokio::sync::oneshot::Receiver<ExitStatus>,
    streams: Vec<(Stream, OwnedFd)>,
    timeout: Option<Duration>,
    grace: Duration,
    started: u64,
) {
    let (exited_tx, exited_rx) = watch::channel(false);
    let pumps: Vec<_> = streams
        .into_iter()
        .map(|(stream, fd)| {
            let exec = exec.clone();
            let exited = exited_rx.clone();
            tokio::spawn(async move { pump::pump(fd, stream, &exec.output, exited).await })
        })
        .collect();

    let pgid = Pid::from_raw(exec.pid);
    let mut timed_out = false;
    let exit = match timeout {
        None => (&mut status).await,
        Some(t) => match tokio::time::timeout(t, &mut status).await {
            Ok(s) => s,
            Err(_) => {
                timed_out = true;
                let _ = killpg(pgid, Signal::SIGTERM);
                match tokio::time::timeout(grace, &mut status).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = killpg(pgid, Signal::SIGKILL);
                        (&mut status).await
                    }
                }
            }
        },
    };
    let _ = exited_tx.send(true);
    for p in pumps {
        let _ = p.await;
    }
    let outcome = match exit {
        Ok(ExitStatus::Code(c)) => Outcome::ExitCode(c),
        Ok(ExitStatus::Signal(s)) => Outcome::Signal(signal::name(s)),
        // The reaper went away: only possible while the agent shuts down.
        Err(_) => Outcome::Signal("SIGKILL".into()),
    };
    let result = ExecResult {
        exec_id: exec.id.clone(),
        outcome: Some(outcome),
        timed_out,
        error: String::new(),
        output_end: exec.output.position().end,
        started_unix_ms: started,
        finished_unix_ms: now_ms(),
    };
    // The result is published before the ring closes: a reader that sees the end of the output finds the result.
    exec.result.send_replace(Some(result));
    exec.output.close();
    exec.stdin.lock().await.writer = None;
}
