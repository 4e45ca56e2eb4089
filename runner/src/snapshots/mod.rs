//! The runner's snapshot store: snapshot images fetched from S3 into a local cache, verified, and shared by every
//! box booted from them.
//!
//! - **Fetch**: parallel ranged GETs through mountpoint-s3-client into a temporary file, then the SHA-256 is checked
//!   against the snapshot's digest. A mismatch is an error naming the snapshot and both digests; the bytes are
//!   deleted, never booted.
//! - **Publish**: an atomic rename to `<cache>/<hex>.ext4`, so a reader sees a whole verified image or nothing.
//! - **One download per image**: callers wanting the same digest wait on one lock; the first downloads, the others
//!   find the published file.
//! - **Eviction**: least recently used first (a file's mtime is its last use) until the cache fits its budget,
//!   never an image a box uses or that is being fetched.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use boxyard_snapshot::s3::S3Store;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RunnerError};

/// A snapshot image a box boots from (as in `pb::SnapshotRef`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSpec {
    /// The snapshot's name, for messages.
    pub name: String,
    /// The image's object key in the bucket.
    pub key: String,
    /// `sha256:<hex>` of the image.
    pub digest: String,
    /// The image's size in bytes.
    pub size: u64,
}

/// The runner's snapshot image cache, filled from the snapshot bucket.
pub struct SnapshotStore {
    dir: PathBuf,
    s3: S3Store,
    budget: u64,
    parallel: usize,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Images downloaded since start (for metrics and tests).
    pub downloads: AtomicU64,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl SnapshotStore {
    /// A cache in `dir` of at most `budget` bytes, fetching with `parallel` ranged GETs per image.
    pub fn new(dir: PathBuf, s3: S3Store, budget: u64, parallel: usize) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunnerError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        // Leftovers of fetches cut by a crash.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".fetch-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(SnapshotStore { dir, s3, budget, parallel, locks: Default::default(), downloads: AtomicU64::new(0) })
    }

    /// Where the image of `digest` lives once cached.
    pub fn path_of(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{}.ext4", hex_of(digest)))
    }

    /// Digests of the cached images.
    pub fn cached(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".ext4").filter(|h| h.len() == 64).map(|h| format!("sha256:{h}"))
            })
            .collect();
        v.sort();
        v
    }

    /// Makes the image of `s` local (fetching and verifying it if needed) and returns its path. `in_use`: digests
    /// that eviction must keep.
    pub async fn ensure(&self, s: &SnapshotSpec, in_use: impl Fn() -> HashSet<String>) -> Result<PathBuf> {
        let path = self.path_of(&s.digest);
        let lock =
            self.locks.lock().unwrap_or_else(PoisonError::into_inner).entry(s.digest.clone()).or_default().clone();
        let _guard = lock.lock().await;
        if path.is_file() {
            touch(&path);
            return Ok(path);
        }
        let tmp = self.dir.join(format!(".fetch-{}-{}", hex_of(&s.digest), std::process::id()));
        tracing::info!(snapshot = %s.name, digest = %s.digest, size = s.size, "fetching snapshot image");
        let started = std::time::Instant::now();
        let got = self.s3.download(&s.key, s.size, &tmp, self.parallel).await;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let got = match got {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(RunnerError::Unavailable(format!("snapshot {:?}: cannot fetch its image: {e}", s.name)));
            }
        };
        if got != s.digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(RunnerError::Corrupt(format!(
                "snapshot {:?}: digest mismatch: the image in the bucket ({}) has {got}, expected {}; it was not used",
                s.name, s.key, s.digest
            )));
        }
        std::fs::rename(&tmp, &path)
            .map_err(|e| RunnerError::Internal(format!("cannot publish {}: {e}", path.display())))?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            snapshot = %s.name,
            "snapshot image fetched and verified: {} MB in {secs:.2} s ({:.0} MB/s)",
            s.size / 1_000_000,
            s.size as f64 / 1e6 / secs.max(1e-9)
        );
        let mut keep = in_use();
        keep.insert(s.digest.clone());
        self.evict(&keep);
        Ok(path)
    }

    /// Removes least recently used images until the cache fits its budget, keeping `keep`.
    pub fn evict(&self, keep: &HashSet<String>) {
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf, String)> = self
            .cached()
            .into_iter()
            .filter_map(|d| {
                let p = self.path_of(&d);
                let md = std::fs::metadata(&p).ok()?;
                Some((md.modified().ok()?, md.len(), p, d))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        let busy: HashSet<String> = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, l)| l.try_lock().is_err())
            .map(|(d, _)| d.clone())
            .collect();
        for (_, size, path, digest) in files {
            if total <= self.budget {
                break;
            }
            if keep.contains(&digest) || busy.contains(&digest) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(%digest, "evicted a cached snapshot image (cache over its budget)");
                total -= size;
            }
        }
    }
}

fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}
