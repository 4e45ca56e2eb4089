//! The VMM's jail: what a running `boxyard-vmm` can still reach once its VM is built. This module owns the steps
//! from "root process with every file it needs open" to "unprivileged process that sees an empty file system":
//!
//! 1. new mount, IPC and UTS namespaces (`unshare`; the process must still be single-threaded, which is why the
//!    binary enters the jail between [`crate::builder::build`] and [`crate::builder::BuiltVm::start`]),
//! 2. every mount made private (nothing the jail does propagates back to the host),
//! 3. a new root: an empty, read-only tmpfs (`pivot_root`), the old root detached, so no host path resolves,
//! 4. no supplementary groups, then the given gid and uid (real, effective and saved: the process keeps no
//!    capability),
//! 5. `PR_SET_NO_NEW_PRIVS` (the seccomp filter, applied by the caller next, also needs it).
//!
//! It adds no network namespace (the VMM has no network device, and creating one costs milliseconds of start-up)
//! and no cgroup handling: the runner places the VMM in its cgroup before exec (see docs/vmm.md, "Jail").

use std::ffi::CStr;
use std::io;

/// Who the jailed process runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JailConfig {
    /// The uid (not 0).
    pub uid: u32,
    /// The gid (not 0).
    pub gid: u32,
}

/// A step of entering the jail failed (the process must then not run the VM).
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The configuration names root.
    #[error("the jail needs an unprivileged uid and gid, not {what} 0 (give --jail-uid/--jail-gid another id)")]
    Root {
        /// "uid" or "gid".
        what: &'static str,
    },
    /// The process is not root, so it cannot create namespaces or change its ids.
    #[error(
        "entering the jail needs root (the VMM runs as uid {0}); run it as root, or pass --no-jail for development"
    )]
    NotRoot(u32),
    /// Another thread exists: a new mount namespace would hold only the calling thread, the others would keep the
    /// host's file system.
    #[error("the process has {0} threads: the jail must be entered before any other thread starts (a VMM bug)")]
    Threaded(usize),
    /// A system call failed.
    #[error("{step}: {source}")]
    Step {
        /// Which step.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn check(step: &'static str, r: libc::c_int) -> Result<(), JailError> {
    if r < 0 { Err(JailError::Step { step, source: io::Error::last_os_error() }) } else { Ok(()) }
}

/// Where the empty tmpfs is mounted (inside the new mount namespace only) before it becomes the root.
const STAGING: &CStr = c"/tmp";

fn count_threads() -> Result<usize, JailError> {
    Ok(std::fs::read_dir("/proc/self/task")
        .map_err(|source| JailError::Step { step: "counting threads (/proc/self/task)", source })?
        .count())
}

/// Enters the jail (see the module comment). On success the process sees an empty read-only root, runs as
/// `cfg.uid`/`cfg.gid` with no supplementary groups and no capabilities, and has no_new_privs set; file descriptors
/// opened before stay usable.
pub fn enter(cfg: &JailConfig) -> Result<(), JailError> {
    if cfg.uid == 0 {
        return Err(JailError::Root { what: "uid" });
    }
    if cfg.gid == 0 {
        return Err(JailError::Root { what: "gid" });
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(JailError::NotRoot(euid));
    }
    // unshare(CLONE_NEWNS) succeeds in a threaded process but moves only the calling thread: refuse instead. A
    // thread just joined may still be listed for a moment (it is reaped after it wakes its joiner): look again.
    let mut threads = count_threads()?;
    for _ in 0..10 {
        if threads == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        threads = count_threads()?;
    }
    if threads != 1 {
        return Err(JailError::Threaded(threads));
    }
    // SAFETY: plain system calls with constant or valid NUL-terminated arguments; they change only this process.
    unsafe {
        check(
            "unshare (mount, IPC, UTS namespaces)",
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS),
        )?;
        check(
            "making every mount private",
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        )?;
        // An empty tmpfs that no one can write (it is read-only and we are about to stop being root anyway).
        check(
            "mounting the jail's empty root (tmpfs on /tmp in the VMM's own mount namespace)",
            libc::mount(
                c"boxyard-vmm-jail".as_ptr(),
                STAGING.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k,nr_inodes=1,mode=0555".as_ptr().cast(),
            ),
        )?;
        check("chdir to the jail's root", libc::chdir(STAGING.as_ptr()))?;
        // pivot_root(".", "."): the tmpfs becomes the root and the old root is stacked on top of it, then detached.
        check(
            "pivot_root into the jail",
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
        )?;
        check("detaching the host's root", libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check("chdir /", libc::chdir(c"/".as_ptr()))?;

        check("dropping supplementary groups", libc::setgroups(0, std::ptr::null()))?;
        check("setresgid", libc::setresgid(cfg.gid, cfg.gid, cfg.gid))?;
        check("setresuid", libc::setresuid(cfg.uid, cfg.uid, cfg.uid))?;
        check("PR_SET_NO_NEW_PRIVS", libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: u32 = 4_000_123;
    const GID: u32 = 4_000_456;

    /// Counts the entries of `/` other than `.` and `..` with raw system calls (the forked child of a threaded test
    /// process should not rely on much of libc); -1 when `/` cannot be opened.
    fn root_entries() -> i64 {
        // SAFETY: raw system calls on a stack buffer.
        unsafe {
            let fd = libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 {
                return -1;
            }
            let mut buf = [0u8; 4096];
            let mut count = 0;
            loop {
                let n = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
                if n <= 0 {
                    break;
                }
                let mut off = 0usize;
                while off < n as usize {
                    // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
                    let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                    let name = &buf[off + 19..off + reclen];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    if name != b"." && name != b".." {
                        count += 1;
                    }
                    off += reclen;
                }
            }
            libc::close(fd);
            count
        }
    }

    /// Runs `enter` in a forked child (the test process has threads; the child of fork has one), then checks from
    /// inside; the exit status is a bitmask of failed checks (0: all passed, 1 << 7: `enter` failed).
    /// Also returns the child's `/proc/PID/mountinfo`, read from outside while the child waits, jailed.
    fn jailed_child_status(pre_opened: libc::c_int) -> (i32, String) {
        let (mut ready, mut go) = ([0; 2], [0; 2]);
        // SAFETY: two pipes into stack arrays.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) + libc::pipe(go.as_mut_ptr()) }, 0);
        // SAFETY: the child makes system calls only and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| unsafe {
                libc::close(go[1]);
                libc::close(ready[0]);
                if enter(&JailConfig { uid: UID, gid: GID }).is_err() {
                    return 1 << 7;
                }
                let mut bad = 0;
                if libc::getuid() != UID || libc::geteuid() != UID {
                    bad |= 1;
                }
                if libc::getgid() != GID || libc::getegid() != GID {
                    bad |= 1 << 1;
                }
                if libc::getgroups(0, std::ptr::null_mut()) != 0 {
                    bad |= 1 << 2;
                }
                if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                    bad |= 1 << 3;
                }
                // The root is empty and read-only, and root's power is gone: mkdir fails.
                if root_entries() != 0 || libc::mkdir(c"/x".as_ptr(), 0o700) == 0 {
                    bad |= 1 << 4;
                }
                // No host path resolves (/proc, /etc exist on every host this runs on).
                if libc::access(c"/proc/self".as_ptr(), libc::F_OK) == 0
                    || libc::access(c"/etc".as_ptr(), libc::F_OK) == 0
                {
                    bad |= 1 << 5;
                }
                // A descriptor opened before the jail still works.
                let mut b = [0u8; 4];
                if libc::pread(pre_opened, b.as_mut_ptr().cast(), 4, 0) != 4 || &b != b"jail" {
                    bad |= 1 << 6;
                }
                // Tell the parent to look, wait until it has.
                libc::write(ready[1], b"r".as_ptr().cast(), 1);
                libc::read(go[0], b.as_mut_ptr().cast(), 1);
                bad
            })();
            unsafe { libc::_exit(code) };
        }
        let mut b = [0u8; 1];
        // SAFETY: reads and closes of our own pipes.
        unsafe {
            libc::close(ready[1]);
            libc::read(ready[0], b.as_mut_ptr().cast(), 1);
        }
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        // SAFETY: as above.
        unsafe {
            libc::close(go[1]);
            libc::close(ready[0]);
            libc::close(go[0]);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (status, mountinfo)
    }

    #[test]
    fn a_jailed_process_sees_an_empty_root_runs_unprivileged_and_keeps_its_descriptors() {
        // Not a skip: the test needs root (namespaces, setuid), as CI and scripts/test.sh run; a non-root run fails.
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "the jail test needs root (namespaces, setuid): run it as root");
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"jail").unwrap();
        let (status, mountinfo) = jailed_child_status(std::os::fd::AsRawFd::as_raw_fd(&f));
        // Only the jail's tmpfs is mounted in its namespace: the host's root was detached, not just covered.
        let mounts: Vec<&str> = mountinfo.lines().collect();
        assert_eq!(mounts.len(), 1, "{mountinfo}");
        assert!(mounts[0].contains(" / / ro,") && mounts[0].contains(" - tmpfs boxyard-vmm-jail "), "{mountinfo}");
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "failed checks (bits): 1 uid, 2 gid, 4 groups, 8 no_new_privs, 16 root not empty or writable, \
             32 host path visible, 64 pre-opened fd, 128 enter failed"
        );
    }

    #[test]
    fn root_ids_are_refused() {
        assert!(matches!(enter(&JailConfig { uid: 0, gid: 5 }), Err(JailError::Root { what: "uid" })));
        assert!(matches!(enter(&JailConfig { uid: 5, gid: 0 }), Err(JailError::Root { what: "gid" })));
    }

    #[test]
    fn a_threaded_process_is_refused_with_a_clear_error() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // A second thread lives while `enter` runs: it must refuse (and leave this process as it was).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let err = enter(&JailConfig { uid: UID, gid: GID }).unwrap_err();
        drop(tx);
        let _ = t.join();
        assert!(matches!(err, JailError::Threaded(n) if n > 1), "{err}");
    }
}
