//! Where things are: the workspace this library was built from, and the Boxyard binaries the build produced.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The root of the Boxyard workspace this library was compiled from (its source checkout: `build/`, `scripts/`,
/// `deploy/` live here).
pub fn workspace() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The path of a built Boxyard binary (`boxyard-controlplane`, `boxyard-runner`, `boxyard-s3dev`, `boxyard`).
///
/// Looked for in `$BOXYARD_BIN_DIR` when set, else beside the running executable, else one directory up (a test or
/// bench executable lives in `target/<profile>/deps`, the binaries in `target/<profile>`). Cargo builds binaries for
/// the tests of their own package only: run `cargo build --workspace` before the tests of another crate (scripts/test.sh
/// does; `cargo nextest run --workspace` builds them too).
pub fn binary(name: &str) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("BOXYARD_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    } else if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
        if let Some(up) = d.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| Error::MissingBinary {
        name: name.into(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}
