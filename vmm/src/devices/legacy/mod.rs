//! Legacy devices on port I/O: the 8250 serial console, a minimal CMOS RTC, the i8042 reset line and the ACPI
//! sleep/reset registers.

mod acpi_power;
mod i8042;
mod rtc;
mod serial;

pub use acpi_power::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT, AcpiPower, S5_SLEEP_TYPE,
};
pub use i8042::{I8042, I8042_BASE};
pub use rtc::{RTC_BASE, Rtc};
pub use serial::{EventFdTrigger, SERIAL_IRQ, SERIAL_PORT, SerialDevice};
