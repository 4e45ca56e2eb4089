//! PID 1 duties: bring the box from a bare kernel to the box's root filesystem, then keep the house (power off).
//!
//! Sequence: mount /dev, /proc, /sys → console on stdio → load the kernel modules listed in the initramfs → find the
//! root disk (read-only ext4) and the writable disk by their virtio serials → overlay them → move into the overlay
//! (switch root) → mount devpts, shm, run → hostname, loopback. Afterwards the ACPI power button powers the box
//! off gracefully ([`power_button`]).

mod modules;
mod mounts;
pub mod power_button;

use std::path::Path;

pub use mounts::power_off;

/// Virtio-blk serial of the read-only root image.
pub const ROOT_SERIAL: &str = "boxyard-root";
/// Virtio-blk serial of the box's writable disk (the overlay's upper layer).
pub const RW_SERIAL: &str = "boxyard-rw";

/// Options read from the kernel command line (`boxyard.*`).
#[derive(Debug, Default, Clone)]
pub struct BootOptions {
    /// `boxyard.ring=BYTES`: unacknowledged output held per execution.
    pub ring_bytes: Option<usize>,
    /// `boxyard.hostname=NAME`.
    pub hostname: Option<String>,
    /// `boxyard.debug`: progress messages on the console.
    pub debug: bool,
}

impl BootOptions {
    pub fn parse(cmdline: &str) -> Self {
        let mut o = BootOptions::default();
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                Some(("boxyard.ring", v)) => o.ring_bytes = v.parse().ok(),
                Some(("boxyard.hostname", v)) => o.hostname = Some(v.into()),
                None if word == "boxyard.debug" => o.debug = true,
                _ => {}
            }
        }
        o
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{step}: {source}")]
    Step { step: String, source: std::io::Error },
    #[error("{0}")]
    Missing(String),
}

pub(crate) fn step<T, E: Into<std::io::Error>>(what: impl Into<String>, r: Result<T, E>) -> Result<T, InitError> {
    r.map_err(|e| InitError::Step { step: what.into(), source: e.into() })
}

/// Runs the whole early boot. On return the process is in the box's root filesystem.
pub fn boot() -> Result<BootOptions, InitError> {
    mounts::early_mounts()?;
    mounts::console_stdio();
    let opts = BootOptions::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let loaded = modules::load_all(Path::new(modules::MODULE_DIR))?;
    if opts.debug {
        eprintln!("boxyard-guest: loaded {loaded} modules");
    }
    mounts::switch_root(&opts)?;
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_boot_options() {
        let o = BootOptions::parse("console=ttyS0 quiet boxyard.ring=65536 boxyard.debug boxyard.hostname=b1");
        assert_eq!(o.ring_bytes, Some(65536));
        assert!(o.debug);
        assert_eq!(o.hostname.as_deref(), Some("b1"));
        assert!(!BootOptions::parse("quiet").debug);
    }
}
