//! vCPU threads: each runs `KVM_RUN` in a loop and hands port I/O and MMIO exits to the buses. Before every entry
//! the thread parks while the VM is paused ([`RunControl`]). A shutdown (triple fault), a KVM system event or an
//! error ends the VM through the [`ExitSignal`]; the main thread then ends the process, so vCPU threads are never
//! joined.

use std::sync::Arc;

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::run_control::RunControl;
use super::{ExitReason, ExitSignal};
use crate::bus::Bus;
use crate::metrics::METRICS;

/// One vCPU and what its exits are dispatched to.
pub struct Vcpu {
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Its index (= APIC ID).
    pub index: u8,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Where the VM's end is reported.
    pub exit: ExitSignal,
    /// Pause and resume.
    pub control: Arc<RunControl>,
}

impl Vcpu {
    /// Starts the vCPU's thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("vcpu{}", self.index)).spawn(move || self.run())
    }

    fn run(mut self) {
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        self.control.enter_vcpu_thread(immediate_exit);
        loop {
            self.control.park_while_paused();
            if self.index == 0 {
                crate::timing::record_first_entry();
            }
            let reason = match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    METRICS.exits_io.inc();
                    self.pio.read(u64::from(port), data);
                    None
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    METRICS.exits_io.inc();
                    self.pio.write(u64::from(port), data);
                    None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    METRICS.exits_mmio.inc();
                    self.mmio.read(addr, data);
                    None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    METRICS.exits_mmio.inc();
                    self.mmio.write(addr, data);
                    None
                }
                Ok(VcpuExit::Hlt) => None,
                Ok(VcpuExit::Shutdown) => Some(ExitReason::Reset),
                Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
                    _ => ExitReason::Error,
                }),
                Ok(VcpuExit::Intr) => {
                    self.interrupted();
                    None
                }
                Ok(other) => {
                    eprintln!("boxyard-vmm: vcpu{}: unhandled exit {other:?}", self.index);
                    Some(ExitReason::Error)
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.interrupted();
                    None
                }
                Err(e) => {
                    eprintln!("boxyard-vmm: vcpu{}: KVM_RUN: {e}", self.index);
                    Some(ExitReason::Error)
                }
            };
            if let Some(r) = reason {
                self.exit.signal(r);
                return;
            }
        }
    }

    /// After a kick: the next `KVM_RUN` enters the guest again (unless kicked again).
    fn interrupted(&mut self) {
        METRICS.exits_interrupted.inc();
        self.fd.set_kvm_immediate_exit(0);
    }
}
