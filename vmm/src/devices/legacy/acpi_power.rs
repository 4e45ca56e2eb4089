//! The ACPI sleep control, sleep status and reset registers the hardware-reduced FADT points at.
//!
//! Writing `SLP_EN` with the `_S5` sleep type to the sleep control register powers the VM off; writing the reset
//! value to the reset register resets it (which, for a box, also ends the VM).

use crate::bus::BusDevice;
use crate::vstate::{ExitReason, ExitSignal};

/// I/O port of the sleep control register.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
/// I/O port of the sleep status register.
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
/// I/O port of the reset register.
pub const ACPI_RESET_PORT: u16 = 0x602;
/// Value the guest writes to the reset register.
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// The sleep type value for soft-off (the DSDT's `_S5` object gives it); written to the sleep control register.
pub const S5_SLEEP_TYPE: u8 = 5;

const SLP_EN: u8 = 1 << 5;

/// The three registers, at [`ACPI_SLEEP_CONTROL_PORT`]..+3.
pub struct AcpiPower {
    exit: ExitSignal,
}

impl AcpiPower {
    /// Registers that end the VM through `exit`.
    pub fn new(exit: ExitSignal) -> Self {
        Self { exit }
    }
}

impl BusDevice for AcpiPower {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 if v & SLP_EN != 0 && (v >> 2) & 7 == S5_SLEEP_TYPE => self.exit.signal(ExitReason::PowerOff),
            2 if v == ACPI_RESET_VALUE => self.exit.signal(ExitReason::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_the_reset_value_resets() {
        let exit = ExitSignal::new().unwrap();
        let mut p = AcpiPower::new(exit.clone());
        p.write(0, &[5 << 2]); // no SLP_EN: nothing
        p.write(0, &[(3 << 2) | SLP_EN]); // S3: ignored
        assert_eq!(exit.reason(), None);
        p.write(0, &[(5 << 2) | SLP_EN]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
        let exit = ExitSignal::new().unwrap();
        let mut p = AcpiPower::new(exit.clone());
        p.write(2, &[ACPI_RESET_VALUE]);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }
}
