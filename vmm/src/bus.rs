//! Dispatch of the guest's port I/O and MMIO accesses to devices.
//!
//! A [`Bus`] maps address ranges to devices; a vCPU exit for an address is handed to the device whose range holds
//! it, with the offset into that range. Accesses to unclaimed addresses read as all ones and writes are dropped, as
//! on real hardware with nothing decoding the address.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device on a bus.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` into the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` into the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else drives it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors inserting a device.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The range overlaps one already taken.
    #[error("bus range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

/// Address ranges and their devices.
#[derive(Default, Clone)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base+len`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base + len;
        let overlaps = self.devices.range(..end).next_back().is_some_and(|(b, (l, _))| b + l > base);
        if len == 0 || overlaps {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        (addr < base + len).then_some((addr - base, dev))
    }

    /// Reads from the device at `addr`; returns false (and fills all ones) when none is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                dev.lock().unwrap_or_else(|e| e.into_inner()).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false when none is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((off, dev)) => {
                dev.lock().unwrap_or_else(|e| e.into_inner()).write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_device_with_offsets_and_unclaimed_read_ones() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(b, [0xff]);
        assert!(bus.write(0x3ff, &[9]));
        assert!(!bus.write(0x3f7, &[9]));
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![9])]);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Echo(vec![]))) as SharedDevice;
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert!(bus.insert(d(), 0x108, 0x10).is_err());
        assert!(bus.insert(d(), 0xf8, 0x10).is_err());
        assert!(bus.insert(d(), 0x110, 0x10).is_ok());
        assert!(bus.insert(d(), 0xf0, 0x10).is_ok());
    }
}
