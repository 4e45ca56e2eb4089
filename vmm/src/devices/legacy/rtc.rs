//! A minimal MC146818 CMOS RTC at ports 0x70 (index) / 0x71 (data).
//!
//! The Debian kernel reads the wall clock from it at boot and probes it with `rtc_cmos`; with nothing at these
//! ports that probing costs about 3 s. Time registers report the host's UTC time in binary, 24-hour mode, never
//! "update in progress"; other registers are plain storage. Alarms and periodic interrupts are not implemented.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Base port (index register; data at offset 1).
pub const RTC_BASE: u16 = 0x70;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const REG_CENTURY: usize = 0x32;
/// Register B: 24-hour mode, binary (not BCD) values.
const B_24H_BINARY: u8 = 0x02 | 0x04;
/// Register D: valid RAM and time.
const D_VRT: u8 = 0x80;

/// The CMOS RTC.
pub struct Rtc {
    index: u8,
    cmos: [u8; 128],
    now: fn() -> u64,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to an era starting 0000-03-01 so leap days fall at the end of each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Rtc {
    /// An RTC reading the host clock.
    pub fn new() -> Self {
        Self::with_clock(unix_now)
    }

    /// An RTC reading seconds since the epoch from `now` (for tests).
    pub fn with_clock(now: fn() -> u64) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H_BINARY;
        cmos[REG_D] = D_VRT;
        Self { index: 0, cmos, now }
    }

    fn register(&self, index: usize) -> u8 {
        let t = (self.now)();
        let days = (t / 86_400) as i64;
        let secs = t % 86_400;
        let (year, month, day) = civil_from_days(days);
        match index {
            0x00 => (secs % 60) as u8,
            0x02 => (secs / 60 % 60) as u8,
            0x04 => (secs / 3600) as u8,
            // Day of week, 1 = Sunday; 1970-01-01 was a Thursday.
            0x06 => ((days + 4).rem_euclid(7) + 1) as u8,
            0x07 => day as u8,
            0x08 => month as u8,
            0x09 => (year % 100) as u8,
            REG_CENTURY => (year / 100) as u8,
            REG_A => self.cmos[REG_A] & 0x7f,
            REG_C => 0,
            i => self.cmos[i],
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            1 => self.register(usize::from(self.index & 0x7f)),
            _ => self.index,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port is the NMI mask: not modelled.
            0 => self.index = v & 0x7f,
            _ => match usize::from(self.index) {
                // Time, status and D registers are driven by the clock: writes are ignored.
                0x00..=0x09 | REG_C | REG_D | REG_CENTURY => {}
                // Keep binary 24-hour mode whatever the guest asks.
                REG_B => self.cmos[REG_B] = (v & !0x06) | B_24H_BINARY,
                i => self.cmos[i] = v,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    #[test]
    fn reports_the_clock_in_binary_24h_without_update_in_progress() {
        // 2026-12-01 13:14:15 UTC, a Tuesday.
        let mut rtc = Rtc::with_clock(|| 1_796_130_855);
        assert_eq!([0, 2, 4, 7, 8, 9, 0x32].map(|i| read(&mut rtc, i)), [15, 14, 13, 1, 12, 26, 20]);
        assert_eq!(read(&mut rtc, 6), 3, "Tuesday");
        assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0, "UIP clear");
        assert_eq!(read(&mut rtc, 0x0b) & 0x06, 0x06);
        assert_eq!(read(&mut rtc, 0x0d), 0x80);
    }

    #[test]
    fn cmos_ram_stores_bytes_but_clock_registers_ignore_writes() {
        let mut rtc = Rtc::with_clock(|| 0);
        rtc.write(0, &[0x40]);
        rtc.write(1, &[0xab]);
        assert_eq!(read(&mut rtc, 0x40), 0xab);
        rtc.write(0, &[0x04]);
        rtc.write(1, &[0x22]);
        assert_eq!(read(&mut rtc, 0x04), 0);
        // NMI-mask bit on the index port is dropped.
        assert_eq!(read(&mut rtc, 0x80 | 0x40), 0xab);
    }

    #[test]
    fn civil_dates_cross_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
    }
}
