//! Graceful power-off on the ACPI power button, which the runner presses with QMP `system_powerdown`.
//!
//! The kernel's ACPI button driver reports the press as `KEY_POWER` on an evdev device named "Power Button". A thread
//! blocks reading that device; a press runs the same power-off as the agent's Shutdown call.

use std::io::Read;
use std::path::PathBuf;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: timeval (16 bytes), type (u16), code (u16), value (i32).
const EVENT_SIZE: usize = 24;

fn power_button_devices() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else { return vec![] };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| std::fs::read_to_string(e.path().join("device/name")).is_ok_and(|n| n.trim() == "Power Button"))
        .map(|e| PathBuf::from("/dev/input").join(e.file_name()))
        .collect()
}

/// Starts one watcher thread per power button; returns how many were found.
pub fn watch(on_press: fn()) -> usize {
    let devices = power_button_devices();
    for dev in &devices {
        let Ok(mut file) = std::fs::File::open(dev) else { continue };
        std::thread::spawn(move || {
            let mut ev = [0u8; EVENT_SIZE];
            while file.read_exact(&mut ev).is_ok() {
                let kind = u16::from_ne_bytes([ev[16], ev[17]]);
                let code = u16::from_ne_bytes([ev[18], ev[19]]);
                let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    crate::debug!("power button pressed: powering off");
                    on_press();
                }
            }
        });
    }
    devices.len()
}
