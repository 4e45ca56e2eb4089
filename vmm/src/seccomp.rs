//! The seccomp filter of a running VMM: after the VM is built (files opened, memory mapped, KVM set up), every
//! thread is limited to the system calls the vCPU loops, the device workers, thread start-up for devices the guest
//! activates later, and process exit need. Any other call kills the process with SIGSYS. `ioctl` is allowed only with
//! the requests in [`ALLOWED_IOCTLS`] (any file descriptor: the filter cannot tell fds apart); every KVM ioctl of the
//! set-up (creating the VM, memory slots, irqchip, vCPUs, irqfds, ioeventfds, CPUID, registers) is done before the
//! filter applies, so it is not on the list. A new ioctl after start-up (e.g. a control-socket command reading vCPU
//! state) must be added there.
//!
//! The filter is built with seccompiler (rust-vmm) and applied to all threads at once (TSYNC).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

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

/// `KVM_RUN` (`_IO(KVMIO, 0x80)`, linux/kvm.h).
pub const KVM_RUN: u64 = 0xae80;

/// The ioctl requests a running VMM makes, with who makes them. `ioctl` with any other request raises SIGSYS.
pub const ALLOWED_IOCTLS: &[(u64, &str)] = &[
    // The vCPU loop (vstate/vcpu.rs).
    (KVM_RUN, "KVM_RUN"),
    // std's `UnixStream::set_nonblocking`, on the agent connection the console device accepts (ioctl, not fcntl).
    (libc::FIONBIO, "FIONBIO"),
];

/// glibc's internal SIGSETXID (`SIGRTMIN + 1` in kernel numbering), the only signal whose handler may be installed
/// after the filter.
pub const GLIBC_SIGSETXID: u64 = 33;

/// The system calls a running VMM makes, besides `ioctl` (allowed only with [`ALLOWED_IOCTLS`]) and `rt_sigaction`
/// (only for [`GLIBC_SIGSETXID`]).
pub const ALLOWED: &[i64] = &[
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
    // glibc opens and reads small files lazily, at a moment that depends on timing (seen: an openat at power-off,
    // reported by the SIGSYS handler, 2 runs in 5 under load). In the jail (jail.rs) the root is empty and
    // read-only, so such an open finds nothing (ENOENT) instead of killing the VMM.
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    // Signals (SIGTERM presses the power button; a pause kicks each vCPU thread with pthread_kill) and the end.
    libc::SYS_rt_sigreturn,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The compiled filter: [`ALLOWED`] calls pass, every other call raises SIGSYS (which kills the process unless a
/// handler is installed: the `boxyard-vmm` binary's names the call in its log, then exits; see
/// [`report_blocked_calls`]).
pub fn filter() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|s| (*s, vec![])).collect();
    // The request is the kernel's `unsigned int cmd`: compare the low 32 bits, as the kernel reads it.
    let ioctl_rules = ALLOWED_IOCTLS
        .iter()
        .map(|(req, _)| {
            SeccompRule::new(vec![SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *req)?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // glibc's pthread_create installs its set-id signal handler (SIGSETXID, kernel signal 33) when the process
    // starts its first thread, which is now after the filter (the vCPUs start jailed): that one handler only.
    rules.insert(
        libc::SYS_rt_sigaction,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            GLIBC_SIGSETXID,
        )?])?],
    );
    let f = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(f.try_into()?)
}

/// The exit status of a VMM that made a system call the filter does not allow (128 + SIGSYS).
pub const BLOCKED_CALL_EXIT: i32 = 128 + libc::SIGSYS;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // The kernel fills `si_syscall` (after `si_call_addr` in the SIGSYS member of siginfo's union, at byte 24 on
    // x86_64) with the number of the blocked call.
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    let mut msg = *b"boxyard-vmm: blocked system call 0000000000 (not in the seccomp allowlist: a VMM bug)\n";
    let mut n = nr.unsigned_abs();
    for i in (33..43).rev() {
        msg[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allowed by the filter.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(BLOCKED_CALL_EXIT);
    }
}

/// Installs a SIGSYS handler that writes the number of a blocked system call to stderr and exits with
/// [`BLOCKED_CALL_EXIT`] (install it before [`apply`]: installing handlers is not allowed afterwards).
pub fn report_blocked_calls() {
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler that only calls write(2) and _exit(2).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

/// Applies `filter` to every thread of the process (and sets no_new_privs).
pub fn apply(filter: &BpfProgram) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter_all_threads(filter)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child with the filter applied; returns the child's wait status.
    fn in_filtered_child(f: impl FnOnce()) -> i32 {
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
    fn an_unlisted_ioctl_request_kills_with_sigsys() {
        let status = in_filtered_child(|| {
            // KVM_GET_API_VERSION (_IO(KVMIO, 0x00)) is a KVM ioctl the running VMM never makes. The filter looks at
            // the request before the kernel looks at the (invalid) descriptor.
            unsafe { libc::ioctl(-1, 0xae00) };
        });
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        // TCGETS (what isatty makes) is not listed either.
        let status = in_filtered_child(|| {
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            unsafe { libc::ioctl(2, libc::TCGETS, &mut t) };
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS, "status {status:#x}");
    }

    #[test]
    fn only_glibcs_setxid_handler_may_be_installed() {
        let status = in_filtered_child(|| unsafe {
            // Querying (act = NULL) SIGSETXID passes the filter.
            if libc::syscall(libc::SYS_rt_sigaction, GLIBC_SIGSETXID, 0, 0, 8) != 0 {
                libc::_exit(3);
            }
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
        let status = in_filtered_child(|| unsafe {
            libc::syscall(libc::SYS_rt_sigaction, libc::SIGTERM, 0, 0, 8);
        });
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS, "status {status:#x}");
    }

    #[test]
    fn listed_ioctl_requests_pass() {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) }, 0);
        let status = in_filtered_child(move || {
            // KVM_RUN on a closed descriptor: allowed by the filter, refused by the kernel (EBADF).
            if unsafe { libc::ioctl(-1, KVM_RUN as libc::c_ulong) } != -1 {
                unsafe { libc::_exit(3) };
            }
            // FIONBIO on a real socket succeeds.
            let mut on: libc::c_int = 1;
            if unsafe { libc::ioctl(fds[0], libc::FIONBIO, &mut on) } != 0 {
                unsafe { libc::_exit(5) };
            }
        });
        unsafe { libc::close(fds[0]) };
        unsafe { libc::close(fds[1]) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
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
