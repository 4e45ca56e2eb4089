//! Per-box writable disks: sparse ext4 images that hold the overlay's upper layer.

use std::path::Path;

/// Why a writable disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Creating or sizing the file failed.
    #[error("cannot create writable disk {path}: {source}")]
    Io {
        /// The disk's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// mkfs.ext4 failed.
    #[error("mkfs.ext4 failed for {path}: {stderr}; is e2fsprogs installed (scripts/setup.sh)?")]
    Mkfs {
        /// The disk's path.
        path: String,
        /// What mkfs.ext4 printed.
        stderr: String,
    },
    /// Below the 16 MiB minimum.
    #[error("disk size {0} bytes is too small: give at least 16 MiB")]
    TooSmall(u64),
}

/// Creates a sparse ext4 image of `size` bytes at `path` (replacing nothing: fails if it exists).
pub async fn create_ext4(path: &Path, size: u64) -> Result<(), DiskError> {
    if size < 16 << 20 {
        return Err(DiskError::TooSmall(size));
    }
    let p = path.display().to_string();
    let io = |source| DiskError::Io { path: p.clone(), source };
    let f = tokio::fs::OpenOptions::new().write(true).create_new(true).open(path).await.map_err(io)?;
    f.set_len(size).await.map_err(io)?;
    drop(f);
    let out = tokio::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "boxyard-rw", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0"])
        .arg(path)
        .output()
        .await
        .map_err(io)?;
    if !out.status.success() {
        let _ = tokio::fs::remove_file(path).await;
        return Err(DiskError::Mkfs { path: p, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(())
}
