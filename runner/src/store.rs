//! Small durable files of the runner's state directory: JSON records written atomically (temporary file, fsync,
//! rename, fsync of the directory), so that a crash leaves either the old record or the new one, never half.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RunnerError;

fn internal(path: &Path, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Internal(format!("state file {}: {e}", path.display()))
}

/// Writes `value` as JSON to `path`, atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunnerError> {
    let dir = path.parent().ok_or_else(|| internal(path, "has no parent directory"))?;
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(value).map_err(|e| internal(path, e))?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| internal(&tmp, e))?;
    f.write_all(&data).and_then(|_| f.sync_all()).map_err(|e| internal(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| internal(path, e))?;
    sync_dir(dir)
}

/// Reads a JSON record; None if the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RunnerError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| internal(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(internal(path, e)),
    }
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), RunnerError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| internal(dir, e))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
