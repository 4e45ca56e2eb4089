//! The part of the i8042 keyboard controller a guest uses to reset the machine (command 0xFE on port 0x64).
//!
//! There is no keyboard behind it, and the guest must find that out quickly. The status register always reads
//! "output buffer full, input buffer empty" and the data register 0xff: Linux's i8042 driver first drains the output
//! buffer, gives up after 16 bytes and reports "No controller found" (a few dozen port reads, the same outcome as
//! on QEMU's microvm, which has no i8042 at all), while a reset through port 0x64 finds the input buffer empty and is
//! written at once. (A status of 0, "nothing to read, ready", made the driver send its read-CTR command and poll
//! 10,000 times for an answer that never came: 2.4 s of port exits in a nested-KVM boot.)

use crate::bus::BusDevice;
use crate::vstate::{ExitReason, ExitSignal};

/// Base port; the device spans 0x60..=0x64 (data at offset 0, command/status at offset 4).
pub const I8042_BASE: u16 = 0x60;
const CMD_RESET_CPU: u8 = 0xfe;
/// Status register: output buffer full (bit 0), input buffer empty (bit 1 clear).
const STATUS_NO_CONTROLLER: u8 = 0x01;

/// The reset line of the i8042.
pub struct I8042 {
    exit: ExitSignal,
}

impl I8042 {
    /// A controller whose reset command ends the VM through `exit`.
    pub fn new(exit: ExitSignal) -> Self {
        Self { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(if offset == 4 { STATUS_NO_CONTROLLER } else { 0xff });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&CMD_RESET_CPU) {
            self.exit.signal(ExitReason::Reset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reset_command_on_the_command_port_resets() {
        let exit = ExitSignal::new().unwrap();
        let mut k = I8042::new(exit.clone());
        k.write(0, &[CMD_RESET_CPU]);
        k.write(4, &[0xad]);
        assert_eq!(exit.reason(), None);
        let mut status = [0u8];
        k.read(4, &mut status);
        assert_eq!(status[0] & 0x01, 0x01, "output buffer full: a probing driver drains it and gives up");
        assert_eq!(status[0] & 0x02, 0, "input buffer empty: a reset command is written at once");
        let mut data = [0u8];
        k.read(0, &mut data);
        assert_eq!(data, [0xff]);
        k.write(4, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
