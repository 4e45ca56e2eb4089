//! A box's durable record (`<box dir>/box.json`): its spec as created and whether it should be running.

use std::collections::BTreeMap;

use boxyard_proto::runner as pb;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

/// vCPUs of a box whose spec names none.
pub const DEFAULT_VCPUS: u32 = 1;
/// Memory of a box whose spec names none.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Writable disk of a box whose spec names none.
pub const DEFAULT_DISK_MIB: u64 = 1024;

/// A snapshot image a box boots from (defined by the snapshot store, which fetches it).
pub use crate::snapshots::SnapshotSpec;

/// A box spec with defaults applied (two requests that mean the same compare equal).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// A root image path on the runner.
    pub root_image: Option<String>,
    /// A snapshot to boot from.
    pub snapshot: Option<SnapshotSpec>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Writable disk size in MiB.
    pub disk_mib: u64,
    /// Environment defaults of every execution.
    pub env: BTreeMap<String, String>,
}

impl Spec {
    /// Checks a spec from the API and applies the defaults.
    pub fn from_proto(s: Option<pb::BoxSpec>) -> Result<Self> {
        let s = s.unwrap_or_default();
        let (root_image, snapshot) = match s.root {
            Some(pb::box_spec::Root::RootImage(p)) if !p.is_empty() => (Some(p), None),
            Some(pb::box_spec::Root::Snapshot(r)) => {
                let hex_ok = r.digest.strip_prefix("sha256:").is_some_and(|h| {
                    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                });
                if r.key.is_empty() || !hex_ok || r.size == 0 {
                    return Err(RunnerError::InvalidArgument(format!(
                        "snapshot {:?}: a snapshot reference needs a key, a size and a digest sha256:<64 hex>",
                        r.name
                    )));
                }
                (None, Some(SnapshotSpec { name: r.name, key: r.key, digest: r.digest, size: r.size }))
            }
            _ => (None, None),
        };
        let spec = Spec {
            root_image,
            snapshot,
            vcpus: if s.vcpus == 0 { DEFAULT_VCPUS } else { s.vcpus },
            memory_mib: if s.memory_mib == 0 { DEFAULT_MEMORY_MIB } else { s.memory_mib },
            disk_mib: if s.disk_mib == 0 { DEFAULT_DISK_MIB } else { s.disk_mib },
            env: s.env.into_iter().collect(),
        };
        if spec.vcpus > 64 {
            return Err(RunnerError::InvalidArgument(format!("vcpus must be between 1 and 64, got {}", spec.vcpus)));
        }
        if !(64..=256 * 1024).contains(&spec.memory_mib) {
            return Err(RunnerError::InvalidArgument(format!(
                "memory_mib must be between 64 and 262144, got {}",
                spec.memory_mib
            )));
        }
        if !(16..=16 * 1024 * 1024).contains(&spec.disk_mib) {
            return Err(RunnerError::InvalidArgument(format!(
                "disk_mib must be between 16 and 16777216, got {}",
                spec.disk_mib
            )));
        }
        if let Some(k) = spec.env.keys().find(|k| k.is_empty() || k.contains('=') || k.contains('\0')) {
            return Err(RunnerError::InvalidArgument(format!("environment variable name {k:?} is invalid")));
        }
        Ok(spec)
    }

    /// The spec as the API shows it.
    pub fn to_proto(&self) -> pb::BoxSpec {
        pb::BoxSpec {
            root: match (&self.root_image, &self.snapshot) {
                (Some(p), _) => Some(pb::box_spec::Root::RootImage(p.clone())),
                (None, Some(s)) => Some(pb::box_spec::Root::Snapshot(pb::SnapshotRef {
                    name: s.name.clone(),
                    key: s.key.clone(),
                    digest: s.digest.clone(),
                    size: s.size,
                })),
                _ => None,
            },
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disk_mib: self.disk_mib,
            env: self.env.clone().into_iter().collect(),
        }
    }
}

/// The box's record (`box.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoxRecord {
    /// The box id.
    pub box_id: String,
    /// Its spec, defaults applied.
    pub spec: Spec,
    /// When it was created.
    pub created_unix_ms: u64,
    /// Whether the box should be running (set by Create/Start, cleared by Stop). A restarted runner re-adopts the
    /// VMs of boxes that should run.
    pub desired_running: bool,
}

impl crate::store::Record for BoxRecord {
    const KIND: &'static str = "box record (box.json)";
    const VERSION: u32 = 1;
}

/// Checks a box id: it names a directory and appears in process names.
pub fn validate_box_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(RunnerError::InvalidArgument(format!(
            "box id {id:?} is invalid: use 1 to 63 characters of a-z 0-9 . _ -, starting with a letter or digit"
        )));
    }
    Ok(())
}
