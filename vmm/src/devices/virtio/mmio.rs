//! The virtio-mmio transport, version 2 (virtio 1.x), one 4 KiB register window per device.
//!
//! The transport owns feature negotiation, the device status state machine and the queue configuration. When the
//! driver sets DRIVER_OK with every queue ready and valid, the queues move to the device ([`VirtioDevice::activate`]).
//! A write of 0 to Status resets the device. QueueNotify writes signal the queue's eventfd; when KVM's ioeventfd is
//! registered for that register, KVM signals the same eventfd without leaving the guest, so both paths agree.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{DeviceQueue, F_VERSION_1, Interrupt, Queue, QueueT, VirtioDevice};
use crate::bus::BusDevice;

/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
const VERSION: u32 = 2;
/// Vendor ID reported to the driver ("BOXY").
const VENDOR_ID: u32 = 0x594f_5842;

/// Offset of QueueNotify (for ioeventfd registration).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
const CONFIG_OFFSET: u64 = 0x100;

/// Device status bits.
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// One device behind its mmio window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    /// Wraps `device`; `irqfd` is its interrupt line.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemoryMmap, irqfd: EventFd) -> std::io::Result<Self> {
        let sizes = device.queue_max_sizes();
        let queues = sizes.iter().map(|s| Queue::new(*s).expect("queue sizes are powers of two")).collect();
        let queue_events = sizes.iter().map(|_| EventFd::new(libc::EFD_NONBLOCK)).collect::<Result<_, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irqfd)),
            queues,
            queue_events,
            features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// The notification eventfd of each queue, to register as KVM ioeventfds.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device runs.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The interrupt line.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
            self.activated = false;
        }
        let sizes = self.device.queue_max_sizes();
        self.queues = sizes.iter().map(|s| Queue::new(*s).expect("queue sizes are powers of two")).collect();
        self.features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            self.reset();
            return;
        }
        // FEATURES_OK only sticks when the driver accepted VERSION_1 and nothing the device does not offer.
        let mut v = v;
        if v & FEATURES_OK != 0 && self.status & FEATURES_OK == 0 {
            let offered = self.device.features() | F_VERSION_1;
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                v &= !FEATURES_OK;
            }
        }
        self.status = v;
        if v & DRIVER_OK != 0 && v & FEATURES_OK != 0 && v & FAILED == 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mem = &self.mem;
        if !self.queues.iter().all(|q| q.ready() && q.is_valid(mem)) {
            self.status |= status::DEVICE_NEEDS_RESET;
            return;
        }
        let mut events = Vec::new();
        for e in &self.queue_events {
            let Ok(event) = e.try_clone() else {
                self.status |= status::DEVICE_NEEDS_RESET;
                return;
            };
            events.push(event);
        }
        // The queues move to the device; the transport keeps fresh ones until a reset rebuilds them.
        let sizes = self.device.queue_max_sizes();
        let handed = self
            .queues
            .iter_mut()
            .zip(sizes)
            .zip(events)
            .map(|((q, size), event)| DeviceQueue {
                queue: std::mem::replace(q, Queue::new(size).expect("queue sizes are powers of two")),
                event,
            })
            .collect();
        match self.device.activate(self.mem.clone(), self.interrupt.clone(), handed, self.driver_features) {
            Ok(()) => self.activated = true,
            Err(e) => {
                eprintln!("boxyard-vmm: activating virtio device type {}: {e}", self.device.device_type());
                self.status |= status::DEVICE_NEEDS_RESET;
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = self.device.features() | F_VERSION_1;
                match self.features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => self.selected().map(|q| q.max_size()).unwrap_or(0).into(),
            0x44 => self.selected().map(|q| q.ready()).unwrap_or(false).into(),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        // Queue configuration is only accepted before the device runs.
        let configurable = !self.activated && self.status & status::FEATURES_OK != 0;
        match offset {
            0x14 => self.features_sel = v,
            0x20 if !self.activated => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            },
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_sel = v,
            0x38 if configurable => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16);
                }
            }
            0x44 if configurable => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            0x50 => {
                if let Some(e) = self.queue_events.get(v as usize) {
                    let _ = e.write(1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => self.set_status(v),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if configurable => {
                let Some(q) = self.selected() else { return };
                let (lo, hi) = if offset & 4 == 0 { (Some(v), None) } else { (None, Some(v)) };
                match offset & !4 {
                    0x80 => q.set_desc_table_address(lo, hi),
                    0x90 => q.set_avail_ring_address(lo, hi),
                    _ => q.set_used_ring_address(lo, hi),
                }
            }
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let v = if data.len() == 4 && offset.is_multiple_of(4) { self.read_reg(offset) } else { 0 };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if let (Ok(b), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::ActivateError;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Probe {
        activated: Arc<Mutex<Option<(usize, u64)>>>,
        resets: Arc<Mutex<u32>>,
    }
    impl VirtioDevice for Probe {
        fn device_type(&self) -> u32 {
            4
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16, 16]
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _i: Arc<Interrupt>,
            q: Vec<DeviceQueue>,
            f: u64,
        ) -> Result<(), ActivateError> {
            *self.activated.lock().unwrap() = Some((q.len(), f));
            Ok(())
        }
        fn reset(&mut self) {
            *self.resets.lock().unwrap() += 1;
        }
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    type Activated = Arc<Mutex<Option<(usize, u64)>>>;

    fn setup() -> (MmioTransport, Activated, Arc<Mutex<u32>>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let p = Probe::default();
        let (a, r) = (p.activated.clone(), p.resets.clone());
        let t = MmioTransport::new(Box::new(p), mem, EventFd::new(libc::EFD_NONBLOCK).unwrap()).unwrap();
        (t, a, r)
    }

    fn drive_to_ok(t: &mut MmioTransport) {
        use status::*;
        wr(t, 0x70, ACKNOWLEDGE | DRIVER);
        wr(t, 0x24, 0);
        wr(t, 0x20, 1 << 5);
        wr(t, 0x24, 1);
        wr(t, 0x20, 1);
        wr(t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_ne!(rd(t, 0x70) & FEATURES_OK, 0);
        for q in 0..2u32 {
            wr(t, 0x30, q);
            wr(t, 0x38, 16);
            let base = 0x1000 * (q + 1);
            wr(t, 0x80, base);
            wr(t, 0x90, base + 0x100);
            wr(t, 0xa0, base + 0x200);
            wr(t, 0x44, 1);
        }
        wr(t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    #[test]
    fn identifies_itself_and_offers_version_1() {
        let (mut t, _, _) = setup();
        assert_eq!(rd(&mut t, 0), MAGIC);
        assert_eq!(rd(&mut t, 4), 2);
        assert_eq!(rd(&mut t, 8), 4);
        assert_eq!(rd(&mut t, 0x10), 1 << 5);
        wr(&mut t, 0x14, 1);
        assert_eq!(rd(&mut t, 0x10), 1, "VERSION_1 in the high word");
        wr(&mut t, 0x30, 1);
        assert_eq!(rd(&mut t, 0x34), 16);
        wr(&mut t, 0x30, 7);
        assert_eq!(rd(&mut t, 0x34), 0, "no such queue");
        let mut c = [0u8; 2];
        t.read(0x104, &mut c);
        assert_eq!(c, [5, 5]);
    }

    #[test]
    fn driver_ok_activates_with_the_negotiated_features_and_zero_resets() {
        let (mut t, act, resets) = setup();
        drive_to_ok(&mut t);
        assert!(t.is_activated());
        assert_eq!(*act.lock().unwrap(), Some((2, (1 << 5) | F_VERSION_1)));
        wr(&mut t, 0x70, 0);
        assert!(!t.is_activated());
        assert_eq!(*resets.lock().unwrap(), 1);
        assert_eq!(rd(&mut t, 0x70), 0);
        wr(&mut t, 0x30, 0);
        assert_eq!(rd(&mut t, 0x44), 0, "queues reset too");
    }

    #[test]
    fn features_ok_is_refused_without_version_1_or_with_unoffered_bits() {
        use status::*;
        let (mut t, _, _) = setup();
        wr(&mut t, 0x24, 0);
        wr(&mut t, 0x20, 1 << 5);
        wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&mut t, 0x70) & FEATURES_OK, 0, "legacy driver refused");
        wr(&mut t, 0x24, 1);
        wr(&mut t, 0x20, 1 | 2);
        wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(rd(&mut t, 0x70) & FEATURES_OK, 0, "unoffered feature refused");
    }

    #[test]
    fn driver_ok_with_an_unready_queue_needs_reset_instead_of_running() {
        use status::*;
        let (mut t, act, _) = setup();
        wr(&mut t, 0x24, 1);
        wr(&mut t, 0x20, 1);
        wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(!t.is_activated());
        assert!(act.lock().unwrap().is_none());
        assert_ne!(rd(&mut t, 0x70) & DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn notify_signals_the_queue_event_and_ack_clears_interrupt_status() {
        let (mut t, _, _) = setup();
        wr(&mut t, 0x50, 1);
        assert_eq!(t.queue_events()[1].read().unwrap(), 1);
        assert!(t.queue_events()[0].read().is_err(), "queue 0 not notified");
        wr(&mut t, 0x50, 9); // out of range: ignored
        t.interrupt().signal_used_queue();
        t.interrupt().signal_config();
        assert_eq!(rd(&mut t, 0x60), 3);
        wr(&mut t, 0x64, 1);
        assert_eq!(rd(&mut t, 0x60), 2);
    }
}
