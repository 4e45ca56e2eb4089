//! File transfer as tar streams: unpack an uploaded archive into a directory, pack a file or directory for download.
//!
//! The tar work is blocking I/O and runs on the blocking pool; bounded channels connect it to the gRPC streams so a
//! large transfer never sits in memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A `Read` over chunks arriving on a channel (used on the blocking pool only).
struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Checks an upload destination and returns it.
pub fn upload_dest(dest: &str) -> Result<PathBuf, FileError> {
    let p = PathBuf::from(dest);
    if !p.is_absolute() {
        return Err(FileError::InvalidArgument(format!(
            "upload destination {dest:?} must be an absolute directory path"
        )));
    }
    if p.exists() && !p.is_dir() {
        return Err(FileError::InvalidArgument(format!("upload destination {dest:?} exists and is not a directory")));
    }
    Ok(p)
}

/// The result of an unpack: (bytes of file data written, entries unpacked).
pub type UnpackTask = tokio::task::JoinHandle<Result<(u64, u64), FileError>>;

/// Unpacks the tar stream fed into the returned sender into `dest`. Returns (bytes of file data written, entries).
pub fn start_unpack(dest: PathBuf) -> (mpsc::Sender<Vec<u8>>, UnpackTask) {
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dest)?;
        let mut reader = ChannelReader { rx, buf: Vec::new(), pos: 0 };
        let (mut entries, mut data) = (0u64, 0u64);
        {
            let mut archive = tar::Archive::new(&mut reader);
            archive.set_preserve_permissions(true);
            archive.set_overwrite(true);
            archive.set_unpack_xattrs(false);
            for entry in archive.entries().map_err(bad_tar)? {
                let mut entry = entry.map_err(bad_tar)?;
                // unpack_in refuses paths that escape dest (absolute paths, "..").
                let size = if entry.header().entry_type().is_file() { entry.size() } else { 0 };
                if entry.unpack_in(&dest).map_err(bad_tar)? {
                    entries += 1;
                    data += size;
                }
            }
        }
        // Drain anything after the end-of-archive marker so the sender never blocks.
        std::io::copy(&mut reader, &mut std::io::sink())?;
        Ok((data, entries))
    });
    (tx, handle)
}

fn bad_tar(e: std::io::Error) -> FileError {
    FileError::InvalidArgument(format!("the upload is not a valid tar stream: {e}"))
}

/// A `Write` that sends chunks on a channel (used on the blocking pool only).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Vec<u8>, FileError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Packs `path` (a file or a directory, named by its last component) into a tar stream of chunks.
pub fn start_pack(path: &str) -> Result<mpsc::Receiver<Result<Vec<u8>, FileError>>, FileError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(FileError::InvalidArgument(format!("download path {path:?} must be absolute")));
    }
    let meta = p.symlink_metadata().map_err(|_| FileError::NotFound(format!("{path:?} does not exist in the box")))?;
    downloadable(path, &p, &meta)?;
    let name: PathBuf = p.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let mut builder = tar::Builder::new(ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) });
        builder.follow_symlinks(false);
        let packed = pack(&mut builder, &p, &name).and_then(|_| builder.into_inner()?.flush());
        if let Err(e) = packed {
            let _ = errors.blocking_send(Err(FileError::Io(e)));
        }
    });
    Ok(rx)
}

/// Refuses what cannot be archived as a download: a device, FIFO or socket (reading one blocks forever, returns
/// endless data or nothing that is a file), and anything on a kernel pseudo filesystem (`/proc`, `/sys`: files whose
/// size is a lie and whose reads fail or never end). Inside a directory, special files are archived as what they
/// are (a tar entry without data).
fn downloadable(path: &str, p: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let special = [
        (t.is_char_device(), "a character device"),
        (t.is_block_device(), "a block device"),
        (t.is_fifo(), "a FIFO"),
        (t.is_socket(), "a socket"),
    ];
    if let Some((_, what)) = special.iter().find(|(is, _)| *is) {
        return Err(FileError::InvalidArgument(format!(
            "{path:?} is {what}: only regular files, directories and symbolic links can be downloaded"
        )));
    }
    if !t.is_symlink()
        && let Some(fs) = pseudo_filesystem(p)
    {
        return Err(FileError::InvalidArgument(format!(
            "{path:?} is on the {fs} pseudo filesystem, whose files are not data: run a command that prints what \
             you need instead (e.g. cat {path})"
        )));
    }
    Ok(())
}

/// The name of the kernel pseudo filesystem `p` is on, if it is on one.
fn pseudo_filesystem(p: &Path) -> Option<&'static str> {
    let fs = nix::sys::statfs::statfs(p).ok()?;
    let t = fs.filesystem_type();
    use nix::sys::statfs as m;
    let known = [
        (m::PROC_SUPER_MAGIC, "proc"),
        (m::SYSFS_MAGIC, "sysfs"),
        (m::DEBUGFS_MAGIC, "debugfs"),
        (m::SECURITYFS_MAGIC, "securityfs"),
        (m::CGROUP_SUPER_MAGIC, "cgroup"),
        (m::CGROUP2_SUPER_MAGIC, "cgroup2"),
        (m::TRACEFS_MAGIC, "tracefs"),
        (m::BPF_FS_MAGIC, "bpf"),
    ];
    known.iter().find(|(magic, _)| *magic == t).map(|(_, name)| *name)
}

/// Packs the tree at `root` under the archive name `name`, in name order. Symbolic links are archived as links;
/// devices and FIFOs as entries without data; sockets are left out (tar cannot hold them); the contents of a
/// pseudo filesystem mounted inside the tree (`/proc` under `/`) are left out, its mount point kept.
fn pack<W: Write>(b: &mut tar::Builder<W>, root: &Path, name: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut stack: Vec<(PathBuf, PathBuf, Option<u64>)> = vec![(root.to_path_buf(), name.to_path_buf(), None)];
    while let Some((src, dest, parent_dev)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&src)?;
        let t = meta.file_type();
        if t.is_dir() {
            b.append_dir(&dest, &src)?;
            let crossed_mount = parent_dev.is_some_and(|d| d != meta.dev());
            if crossed_mount && pseudo_filesystem(&src).is_some() {
                continue;
            }
            let mut children: Vec<std::ffi::OsString> =
                std::fs::read_dir(&src)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
            children.sort();
            for child in children.into_iter().rev() {
                stack.push((src.join(&child), dest.join(&child), Some(meta.dev())));
            }
        } else if t.is_file() || t.is_symlink() {
            b.append_path_with_name(&src, &dest)?;
        } else if t.is_socket() {
            continue;
        } else {
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            header.set_size(0);
            let kind = if t.is_fifo() {
                tar::EntryType::Fifo
            } else if t.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            header.set_entry_type(kind);
            if kind != tar::EntryType::Fifo {
                let dev = meta.rdev();
                header.set_device_major(nix::sys::stat::major(dev) as u32)?;
                header.set_device_minor(nix::sys::stat::minor(dev) as u32)?;
            }
            b.append_data(&mut header, &dest, std::io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn download(path: &str) -> Result<Vec<u8>, FileError> {
        let mut rx = start_pack(path)?;
        let mut out = vec![];
        while let Some(chunk) = rx.recv().await {
            out.extend(chunk?);
        }
        Ok(out)
    }

    fn refused(r: Result<Vec<u8>, FileError>) -> String {
        match r {
            Err(FileError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {:?}", other.map(|v| v.len())),
        }
    }

    #[tokio::test]
    async fn special_files_and_pseudo_filesystems_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(refused(download("/dev/null").await).contains("is a character device"));
        assert!(refused(download("/dev/zero").await).contains("is a character device"));
        assert!(refused(download(fifo.to_str().unwrap()).await).contains("is a FIFO"));
        assert!(refused(download(sock.to_str().unwrap()).await).contains("is a socket"));
        assert!(refused(download("/proc").await).contains("proc pseudo filesystem"));
        assert!(refused(download("/proc/self/mem").await).contains("proc pseudo filesystem"));
        assert!(refused(download("/sys/kernel").await).contains("sysfs pseudo filesystem"));
    }

    #[tokio::test]
    async fn a_directory_with_special_files_is_archived_as_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/file"), b"data").unwrap();
        std::os::unix::fs::symlink("sub/file", d.join("link")).unwrap();
        nix::unistd::mkfifo(&d.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
        let tar = download(d.to_str().unwrap()).await.unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut seen = vec![];
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = vec![];
            e.read_to_end(&mut data).unwrap();
            seen.push((path, e.header().entry_type(), data));
        }
        let names: Vec<(&str, tar::EntryType)> = seen.iter().map(|(p, t, _)| (p.as_str(), *t)).collect();
        assert_eq!(
            names,
            [
                ("d", tar::EntryType::Directory),
                ("d/link", tar::EntryType::Symlink),
                ("d/pipe", tar::EntryType::Fifo),
                ("d/sub", tar::EntryType::Directory),
                ("d/sub/file", tar::EntryType::Regular),
            ],
            "the socket is left out; everything else is archived as what it is, in name order"
        );
        assert_eq!(seen[4].2, b"data");
    }
}
