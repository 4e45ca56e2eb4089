//! The snapshot image format and its reproducible builder.
//!
//! A snapshot is an ext4 filesystem image (no journal: it is mounted read-only by every box; each box writes to its
//! own overlay disk) and [`Metadata`] (default command, environment, working directory, user) kept beside it. The
//! builder copies a directory tree into a fresh image with `mkfs.ext4 -d` and then pins everything that would
//! otherwise vary between builds: filesystem UUID, hash seed, creation times, and every inode's timestamps (set to
//! the epoch with debugfs). Ownership and modes come from the tree. The same tree gives the same bytes, so the
//! same digest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How executions run by default in boxes booted from a snapshot: the API contract's `SnapshotMetadata` (one
/// definition for the builder, the API and the runners).
pub use boxyard_api::SnapshotMetadata as Metadata;

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub path: PathBuf,
    pub size: u64,
    /// `sha256:<hex>` of the image bytes.
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{tool} is missing or failed to start ({source}); install e2fsprogs (scripts/setup.sh does)")]
    Tool { tool: &'static str, source: std::io::Error },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

const UUID: &str = "7b0c5e2a-4f3d-4e1b-9a6c-b0c5fa11e101";
const HASH_SEED: &str = "7b0c5e2a-4f3d-4e1b-9a6c-b0c5fa11e102";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.to_path_buf(), source }
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<String, BuildError> {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    let out = cmd.output().map_err(|source| BuildError::Tool { tool, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(BuildError::Failed { tool, stderr });
    }
    Ok(stderr + &String::from_utf8_lossy(&out.stdout))
}

/// Every path below `root` (relative, sorted), and the apparent size of the tree.
fn walk(root: &Path) -> Result<(Vec<String>, u64), BuildError> {
    let mut paths = Vec::new();
    let mut bytes = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).map_err(io(&p))?;
            bytes += md.len();
            let rel = p.strip_prefix(root).expect("below root").to_string_lossy().to_string();
            paths.push(rel);
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    paths.sort();
    Ok((paths, bytes))
}

/// Builds `out` from the tree at `src`.
pub fn build_from_dir(src: &Path, out: &Path) -> Result<Built, BuildError> {
    if !src.is_dir() {
        return Err(BuildError::NotADirectory(src.to_path_buf()));
    }
    let (paths, bytes) = walk(src)?;
    // Room for metadata: inodes (one per path, 256 bytes), directory blocks, and some slack.
    let size_mib = ((bytes + paths.len() as u64 * 4096) * 5 / 4 / (1 << 20) + 16).max(32);
    let _ = std::fs::remove_file(out);
    run(
        "mkfs.ext4",
        Command::new("mkfs.ext4")
            .env("E2FSPROGS_FAKE_TIME", "1")
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "boxyard-snap", "-U", UUID])
            .arg("-E")
            .arg(format!("hash_seed={HASH_SEED}"))
            .args(["-b", "4096", "-I", "256", "-m", "0", "-d"])
            .arg(src)
            .arg(out)
            .arg(format!("{size_mib}M")),
    )?;
    // Pin every timestamp (mkfs copies mtimes and stamps the rest with the current time). The tools read
    // E2FSPROGS_FAKE_TIME=0 as "not set", hence 1 for the times they write themselves (superblock write time).
    let cmds_path = out.with_extension("debugfs");
    {
        let mut f = std::fs::File::create(&cmds_path).map_err(io(&cmds_path))?;
        let mut w = |line: String| f.write_all(line.as_bytes()).map_err(io(&cmds_path));
        let fixed = ["/".to_string(), "/lost+found".into(), "<1>".into(), "<7>".into()];
        for p in fixed.iter().cloned().chain(paths.iter().map(|p| format!("/{p}"))) {
            let q = p.replace('"', "\\\"");
            for field in ["atime", "mtime", "ctime", "crtime"] {
                w(format!("sif \"{q}\" {field} 0\n"))?;
            }
        }
        for field in ["mkfs_time", "lastcheck", "mtime", "wtime"] {
            w(format!("ssv {field} 0\n"))?;
        }
    }
    let log = run(
        "debugfs",
        Command::new("debugfs").env("E2FSPROGS_FAKE_TIME", "1").arg("-w").arg("-f").arg(&cmds_path).arg(out),
    );
    let _ = std::fs::remove_file(&cmds_path);
    let log = log?;
    // debugfs echoes each command ("debugfs: sif ..."); anything else it prints is a complaint.
    if let Some(line) = log.lines().find(|l| !l.starts_with("debugfs") && !l.trim().is_empty()) {
        return Err(BuildError::Failed { tool: "debugfs", stderr: line.to_string() });
    }
    let size = std::fs::metadata(out).map_err(io(out))?.len();
    let digest = crate::digest_file(out).map_err(io(out))?;
    Ok(Built { path: out.to_path_buf(), size, digest })
}

/// Reads a file out of an image (for checks and tests), with debugfs.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>, BuildError> {
    let out = Command::new("debugfs")
        .env("PATH", format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default()))
        .arg("-R")
        .arg(format!("cat \"{path}\""))
        .arg(image)
        .output()
        .map_err(|source| BuildError::Tool { tool: "debugfs", source })?;
    if !out.status.success() {
        return Err(BuildError::Failed { tool: "debugfs", stderr: String::from_utf8_lossy(&out.stderr).into() });
    }
    Ok(out.stdout)
}
