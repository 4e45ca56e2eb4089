//! Starts one process of an execution: pipes or a pseudo-terminal, its own session (so signals reach the whole process
//! group), its user, environment and working directory.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::unistd::pipe2;
use tokio::sync::oneshot;

use super::reaper::{ExitStatus, Reaper};
use super::users::Identity;

/// What to start.
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub identity: Identity,
    /// (rows, cols) of a pseudo-terminal; None: pipes.
    pub tty: Option<(u16, u16)>,
    pub stdin: bool,
}

/// A started process and the host ends of its standard streams (all non-blocking, close-on-exec).
pub struct Spawned {
    pub pid: i32,
    pub status: oneshot::Receiver<ExitStatus>,
    /// stdout, or the pty master in tty mode.
    pub stdout: OwnedFd,
    /// None in tty mode (stderr goes to the terminal).
    pub stderr: Option<OwnedFd>,
    /// The write end of stdin (a dup of the pty master in tty mode), if stdin was asked for.
    pub stdin: Option<OwnedFd>,
    /// The pty master, for resizing.
    pub pty: Option<OwnedFd>,
}

fn nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// Starts the process. An error here means it could not run at all (e.g. the command does not exist).
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec) -> std::io::Result<Spawned> {
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..]).env_clear().envs(spec.env.iter().map(|(k, v)| (k, v))).current_dir(&spec.cwd);
    // Switching users needs root; in local (development) mode the agent may run unprivileged and then runs execs
    // as itself.
    if nix::unistd::geteuid().is_root() {
        cmd.uid(spec.identity.uid).gid(spec.identity.gid);
    }
    let tty = spec.tty.is_some();
    // SAFETY: only async-signal-safe calls (setsid, ioctl) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let (stdout, stderr, stdin, pty);
    if let Some((rows, cols)) = spec.tty {
        let ws = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let p = openpty(Some(&ws), None)?;
        fcntl(&p.master, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        fcntl(&p.slave, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        cmd.stdin(Stdio::from(p.slave.try_clone()?));
        cmd.stdout(Stdio::from(p.slave.try_clone()?));
        cmd.stderr(Stdio::from(p.slave));
        nonblocking(&p.master)?;
        stdin = if spec.stdin { Some(p.master.try_clone()?) } else { None };
        stderr = None;
        pty = Some(p.master.try_clone()?);
        stdout = p.master;
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
        if spec.stdin {
            let (in_r, in_w) = pipe()?;
            cmd.stdin(Stdio::from(in_r));
            nonblocking(&in_w)?;
            stdin = Some(in_w);
        } else {
            cmd.stdin(Stdio::null());
            stdin = None;
        }
        nonblocking(&out_r)?;
        nonblocking(&err_r)?;
        stdout = out_r;
        stderr = Some(err_r);
        pty = None;
    }
    let (pid, status) = reaper.spawn(|| cmd.spawn().map(|child| child.id() as i32))?;
    // Dropping the command closes the child's ends of the pipes / the pty slave in this process, so that EOF arrives
    // when the process (and its descendants) close theirs.
    drop(cmd);
    debug_assert!(stdout.as_raw_fd() >= 0);
    Ok(Spawned { pid, status, stdout, stderr, stdin, pty })
}
