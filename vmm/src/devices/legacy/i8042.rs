//! The part of the i8042 keyboard controller a guest uses to reset the machine (command 0xFE on port 0x64).
//!
//! Status reads say "no data, ready for input" so a probing driver gives up quickly.

use crate::bus::BusDevice;
use crate::vstate::{ExitReason, ExitSignal};

/// Base port; the device spans 0x60..=0x64 (data at offset 0, command/status at offset 4).
pub const I8042_BASE: u16 = 0x60;
const CMD_RESET_CPU: u8 = 0xfe;

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
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
        let mut status = [0xffu8];
        k.read(4, &mut status);
        assert_eq!(status, [0]);
        k.write(4, &[CMD_RESET_CPU]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
