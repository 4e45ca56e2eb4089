//! The seccomp filter of a running VMM: after the VM is built (files opened, memory mapped, KVM set up), every
//! thread is limited to the system calls the vCPU loops, the device workers, thread start-up for devices the guest
//! activates later, and process exit need. Any other call kills the process with SIGSYS. `ioctl` is allowed with any
//! request for now (the KVM ioctls in use are few; narrowing it by request number is future work).
//!
//! The filter is built with seccompiler (rust-vmm) and applied to all threads at once (TSYNC).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Errors building or applying the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules did not compile.
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("applying the seccomp filter: {0}")]
    Apply(#[from] seccompiler::Error),
}

/// The system calls a running VMM makes.
pub const ALLOWED: &[i64] = &[
    // vCPUs and KVM.
    libc::SYS_ioctl,
    // Device I/O: eventfds, the console socket, disks, the console log, randomness.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_accept4,
    libc::SYS_shutdown,
    libc::SYS_getrandom,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_lseek,
    // Waiting.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_futex,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_sched_yield,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Device worker threads start when the guest activates a device, and end on reset.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_prctl,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    // Signals (SIGTERM presses the power button) and the end.
    libc::SYS_rt_sigreturn,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The compiled filter: [`ALLOWED`] calls pass, every other call kills the process.
pub fn filter() -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|s| (*s, vec![])).collect();
    let f = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(f.try_into()?)
}

/// Applies `filter` to every thread of the process (and sets no_new_privs).
pub fn apply(filter: &BpfProgram) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter_all_threads(filter)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child with the filter applied; returns the child's wait status.
    fn in_filtered_child(f: fn()) -> i32 {
        let prog = filter().unwrap();
        // SAFETY: the child only applies the prepared filter, makes raw system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            if seccompiler::apply_filter(&prog).is_err() {
                unsafe { libc::_exit(99) };
            }
            f();
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn an_unlisted_system_call_kills_with_sigsys() {
        let status = in_filtered_child(|| {
            // mkdirat is not on the list.
            unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, c"/tmp/should-not-exist-vmm".as_ptr(), 0o700) };
        });
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }

    #[test]
    fn listed_system_calls_pass() {
        let status = in_filtered_child(|| {
            let mut buf = [0u8; 8];
            // getrandom and write are allowed.
            let n = unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), 0) };
            if n != 8 {
                unsafe { libc::_exit(3) };
            }
            unsafe { libc::syscall(libc::SYS_write, 2, b"".as_ptr(), 0) };
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }
}
