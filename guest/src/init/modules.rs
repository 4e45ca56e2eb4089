//! Loads the kernel modules shipped in the initramfs, in the order `modules.order` lists them (dependencies first;
//! scripts/build-guest.sh computes it with depmod).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{InitError, step};

pub const MODULE_DIR: &str = "/lib/modules/boxyard";

/// Loads every listed module; returns how many were loaded. A module that is already present is fine.
pub fn load_all(dir: &Path) -> Result<usize, InitError> {
    let order = match std::fs::read_to_string(dir.join("modules.order")) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(InitError::Step { step: "read modules.order".into(), source: e });
        }
    };
    let params = CString::default();
    let mut loaded = 0;
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let file = step(format!("open module {name}"), std::fs::File::open(&path))?;
        // SAFETY: finit_module takes an fd, a NUL-terminated parameter string and flags.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(InitError::Step { step: format!("load module {name}"), source: err });
            }
        } else {
            loaded += 1;
        }
    }
    Ok(loaded)
}
