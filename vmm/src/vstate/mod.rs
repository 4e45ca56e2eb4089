//! The KVM side of a VM: the VM file descriptor with its memory, irqchip and PIT ([`vm`]), the vCPU threads and
//! their exit handling ([`vcpu`]), pausing and resuming them ([`run_control`]), and how the VM's end is signalled from wherever it is noticed ([`ExitSignal`]).

pub mod run_control;
pub mod vcpu;
pub mod vm;

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

/// Why the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5): a normal end, exit status 0.
    PowerOff,
    /// The guest reset or triple-faulted (the kernel's `reboot=t`): for a box, also an end.
    Reset,
    /// A vCPU failed (KVM error, unhandled exit): exit status 1.
    Error,
    /// The control socket's `kill`: exit status 3.
    Killed,
}

impl ExitReason {
    /// The VMM process's exit status for this end.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitReason::PowerOff | ExitReason::Reset => 0,
            ExitReason::Error => 1,
            ExitReason::Killed => 3,
        }
    }
}

/// The first reason the VM ended, and an eventfd the main thread waits on.
#[derive(Clone)]
pub struct ExitSignal {
    reason: Arc<Mutex<Option<ExitReason>>>,
    event: Arc<EventFd>,
}

impl ExitSignal {
    /// A signal not raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { reason: Arc::new(Mutex::new(None)), event: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?) })
    }

    /// Records `reason` (the first one wins) and wakes the waiter.
    pub fn signal(&self, reason: ExitReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        let _ = self.event.write(1);
    }

    /// The reason, once signalled.
    pub fn reason(&self) -> Option<ExitReason> {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The eventfd that becomes readable when signalled.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}
