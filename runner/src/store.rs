//! Small durable files of the runner's state directory: JSON records written atomically (temporary file, fsync,
//! rename, fsync of the directory), so that a crash leaves either the old record or the new one, never half.
//!
//! Every record carries a format `version` (a top-level JSON field), because VMs and their state outlive runner
//! upgrades. The rule (docs/runner-api.md, "Upgrades"): readers accept every older version (a record without the
//! field is version 1, the format before versions were written), upgrading it in memory; writers write the newest;
//! a record newer than this runner knows is an error that names the version, and the record is left as it is.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RunnerError;
use crate::storage::{Area, Op, Storage};

fn internal(path: &Path, e: impl std::fmt::Display) -> RunnerError {
    RunnerError::Internal(format!("state file {}: {e}", path.display()))
}

/// A versioned JSON record of the state directory.
pub trait Record: Serialize + DeserializeOwned {
    /// What the record is, for messages ("box record").
    const KIND: &'static str;
    /// The format version this runner writes, and the newest it reads.
    const VERSION: u32;

    /// Brings the JSON of an older version `from` up to [`VERSION`](Self::VERSION). Version 1 is the first format;
    /// none needs upgrading yet.
    fn upgrade(value: serde_json::Value, _from: u32) -> Result<serde_json::Value, String> {
        Ok(value)
    }
}

/// The JSON of a record, with its `version`.
pub fn encode_record<T: Record>(value: &T) -> Result<Vec<u8>, String> {
    let mut v = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let obj = v.as_object_mut().ok_or_else(|| format!("a {} must be a JSON object", T::KIND))?;
    obj.insert("version".into(), T::VERSION.into());
    serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())
}

/// Reads a record of any version up to [`Record::VERSION`] (`path` is only for messages).
pub fn decode_record<T: Record>(path: &Path, data: &[u8]) -> Result<T, RunnerError> {
    let mut v: serde_json::Value = serde_json::from_slice(data).map_err(|e| internal(path, e))?;
    let obj = v.as_object_mut().ok_or_else(|| internal(path, format!("a {} must be a JSON object", T::KIND)))?;
    let version = match obj.remove("version") {
        None => 1,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| internal(path, format!("{} version {n} is not a positive integer", T::KIND)))?,
    };
    if version > T::VERSION {
        return Err(RunnerError::NewerRecord {
            path: path.to_path_buf(),
            kind: T::KIND,
            version,
            supported: T::VERSION,
        });
    }
    let v = if version < T::VERSION { T::upgrade(v, version).map_err(|e| internal(path, e))? } else { v };
    serde_json::from_value(v).map_err(|e| internal(path, e))
}

/// Writes a record atomically and durably, as the newest version.
pub fn write_record<T: Record>(storage: &Storage, path: &Path, value: &T) -> Result<(), RunnerError> {
    let data = encode_record(value).map_err(|e| internal(path, e))?;
    write_bytes(storage, path, &data)
}

/// Reads a record; None if the file does not exist.
pub fn read_record<T: Record>(path: &Path) -> Result<Option<T>, RunnerError> {
    match std::fs::read(path) {
        Ok(data) => decode_record(path, &data).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(internal(path, e)),
    }
}

/// Writes `value` as plain JSON to `path`, atomically and durably (files that are not records, such as
/// `runner.addr`, whose format tools read as it is).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunnerError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| internal(path, e))?;
    write_bytes(&Storage::new(), path, &data)
}

fn write_bytes(storage: &Storage, path: &Path, data: &[u8]) -> Result<(), RunnerError> {
    let dir = path.parent().ok_or_else(|| internal(path, "has no parent directory"))?;
    let tmp = path.with_extension("tmp");
    let mut f =
        storage.run(Area::Records, Op::Create, || std::fs::File::create(&tmp)).map_err(|e| internal(&tmp, e))?;
    storage.run(Area::Records, Op::Write, || f.write_all(data)).map_err(|e| internal(&tmp, e))?;
    storage.run(Area::Records, Op::Sync, || f.sync_all()).map_err(|e| internal(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| internal(path, e))?;
    sync_dir_with(storage, dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), RunnerError> {
    sync_dir_with(&Storage::new(), dir)
}

fn sync_dir_with(storage: &Storage, dir: &Path) -> Result<(), RunnerError> {
    storage
        .run(Area::Records, Op::Sync, || std::fs::File::open(dir).and_then(|d| d.sync_all()))
        .map_err(|e| internal(dir, e))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        a: u32,
    }

    impl Record for R {
        const KIND: &'static str = "test record";
        const VERSION: u32 = 2;
        fn upgrade(mut v: serde_json::Value, from: u32) -> Result<serde_json::Value, String> {
            assert_eq!(from, 1);
            v["a"] = (v["a"].as_u64().unwrap() * 10).into();
            Ok(v)
        }
    }

    #[test]
    fn versions_old_current_and_newer() {
        let p = Path::new("/x/r.json");
        // Without a version: version 1, upgraded.
        assert_eq!(decode_record::<R>(p, br#"{"a": 4}"#).unwrap(), R { a: 40 });
        assert_eq!(decode_record::<R>(p, br#"{"a": 4, "version": 2}"#).unwrap(), R { a: 4 });
        let written = encode_record(&R { a: 5 }).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(v["version"], 2);
        let e = decode_record::<R>(p, br#"{"a": 4, "version": 3}"#).unwrap_err();
        assert!(matches!(e, RunnerError::NewerRecord { version: 3, supported: 2, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("version 3") && msg.contains("/x/r.json") && msg.contains("upgrade"), "{msg}");
        assert!(decode_record::<R>(p, br#"{"a": 4, "version": "x"}"#).is_err());
    }
}
