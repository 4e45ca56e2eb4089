//! Pausing and resuming the vCPUs. [`RunControl`] owns the VM's run state (running or paused) and how many vCPU
//! threads are parked; the vCPU loops check it before every `KVM_RUN`.
//!
//! A vCPU inside `KVM_RUN` is kicked out with a signal ([`kick_signal`]) whose handler sets the thread's
//! `kvm_run.immediate_exit`: a kick that lands just before the thread enters the guest still makes that `KVM_RUN`
//! return at once (`EINTR`), so no kick is ever lost between the check and the entry. [`RunControl::pause`] returns
//! once every vCPU is parked (the guest executes nothing), or fails after its deadline.

use std::cell::Cell;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Errors pausing the VM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunControlError {
    /// Some vCPUs did not stop within the deadline (a vCPU stuck in a device handler).
    #[error("only {parked} of {vcpus} vCPUs stopped within {waited_ms} ms; the VM runs on, retry the pause")]
    PauseTimeout {
        /// vCPUs that stopped.
        parked: u8,
        /// vCPUs of the VM.
        vcpus: u8,
        /// How long the pause waited.
        waited_ms: u64,
    },
}

/// Whether the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// vCPUs enter the guest.
    Running,
    /// vCPUs stay parked until resumed.
    Paused,
}

struct Inner {
    paused: bool,
    parked: u8,
    threads: Vec<libc::pthread_t>,
}

/// The run state of a VM's vCPUs, shared by the vCPU threads and whoever pauses them.
pub struct RunControl {
    vcpus: u8,
    inner: Mutex<Inner>,
    changed: Condvar,
}

thread_local! {
    /// This vCPU thread's `kvm_run.immediate_exit` (null on other threads), written by the kick handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU out of `KVM_RUN` (the first real-time signal glibc leaves to programs).
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_sig: libc::c_int) {
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is this thread's mapped kvm_run field, set by `enter_vcpu_thread`.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

/// Installs the kick handler (before the seccomp filter: installing handlers is not allowed afterwards).
pub fn install_kick_handler() {
    // SAFETY: a zeroed sigaction whose handler only does a volatile store through a thread-local pointer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
    }
}

impl RunControl {
    /// A running VM of `vcpus` vCPUs.
    pub fn new(vcpus: u8) -> Self {
        Self {
            vcpus,
            inner: Mutex::new(Inner { paused: false, parked: 0, threads: Vec::new() }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once by each vCPU thread before its loop: registers the thread for kicks and points the kick handler
    /// at its `immediate_exit` field.
    pub fn enter_vcpu_thread(&self, immediate_exit: *mut u8) {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        self.lock().threads.push(me);
    }

    /// Called by a vCPU thread before each `KVM_RUN`: parks while the VM is paused.
    pub fn park_while_paused(&self) {
        let mut g = self.lock();
        if !g.paused {
            return;
        }
        g.parked += 1;
        self.changed.notify_all();
        while g.paused {
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.parked -= 1;
    }

    /// The current state.
    pub fn state(&self) -> RunState {
        if self.lock().paused { RunState::Paused } else { RunState::Running }
    }

    /// Stops every vCPU; returns once all are parked, or fails after `deadline` and lets the VM run on (a pause
    /// either completes or leaves nothing behind).
    pub fn pause(&self, deadline: Duration) -> Result<(), RunControlError> {
        let started = Instant::now();
        let mut g = self.lock();
        g.paused = true;
        for &t in &g.threads {
            // SAFETY: the thread ids are of this process's vCPU threads, which never exit before the process.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
        while g.parked < self.vcpus {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                g.paused = false;
                self.changed.notify_all();
                return Err(RunControlError::PauseTimeout {
                    parked: g.parked,
                    vcpus: self.vcpus,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            g = self.changed.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(())
    }

    /// Lets the vCPUs run again (a no-op when running).
    pub fn resume(&self) {
        self.lock().paused = false;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Fake vCPU threads: each counts loop turns and "runs" by sleeping briefly (a blocking call the kick
    /// interrupts, like `KVM_RUN`).
    fn fake_vcpus(n: u8) -> (Arc<RunControl>, Vec<Arc<AtomicU64>>) {
        install_kick_handler();
        let rc = Arc::new(RunControl::new(n));
        let mut counters = Vec::new();
        for _ in 0..n {
            let (rc, c) = (rc.clone(), Arc::new(AtomicU64::new(0)));
            counters.push(c.clone());
            std::thread::spawn(move || {
                let mut exit_flag = Box::new(0u8);
                rc.enter_vcpu_thread(&mut *exit_flag);
                loop {
                    rc.park_while_paused();
                    c.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                    // SAFETY: the flag outlives the thread's loop.
                    unsafe { std::ptr::write_volatile(&mut *exit_flag, 0) };
                }
            });
        }
        (rc, counters)
    }

    #[test]
    fn pause_parks_every_vcpu_and_resume_lets_them_run() {
        let (rc, counters) = fake_vcpus(3);
        std::thread::sleep(Duration::from_millis(30));
        rc.pause(Duration::from_secs(2)).unwrap();
        assert_eq!(rc.state(), RunState::Paused);
        let frozen: Vec<u64> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        std::thread::sleep(Duration::from_millis(50));
        let later: Vec<u64> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(frozen, later, "no vCPU ran while paused");
        rc.resume();
        assert_eq!(rc.state(), RunState::Running);
        std::thread::sleep(Duration::from_millis(50));
        for (i, c) in counters.iter().enumerate() {
            assert!(c.load(Ordering::SeqCst) > later[i], "vCPU {i} runs again after resume");
        }
        // Pausing twice in a row and resuming twice are harmless.
        rc.pause(Duration::from_secs(2)).unwrap();
        rc.pause(Duration::from_secs(2)).unwrap();
        rc.resume();
        rc.resume();
    }

    #[test]
    fn a_vcpu_that_never_parks_makes_pause_fail_after_its_deadline() {
        // Two vCPUs declared, one thread: the pause cannot complete.
        install_kick_handler();
        let rc = Arc::new(RunControl::new(2));
        let r = rc.clone();
        std::thread::spawn(move || {
            loop {
                r.park_while_paused();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let err = rc.pause(Duration::from_millis(100)).unwrap_err();
        assert_eq!(err, RunControlError::PauseTimeout { parked: 1, vcpus: 2, waited_ms: err_ms(&err) });
        assert_eq!(rc.state(), RunState::Running, "a failed pause leaves the VM running");
    }

    fn err_ms(e: &RunControlError) -> u64 {
        match e {
            RunControlError::PauseTimeout { waited_ms, .. } => {
                assert!(*waited_ms >= 100);
                *waited_ms
            }
        }
    }
}
