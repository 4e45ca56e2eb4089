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

/// Unpacks the tar stream fed into the returned sender into `dest`. Returns (bytes, entries).
/// The result of an unpack: (bytes read, entries unpacked).
pub type UnpackTask = tokio::task::JoinHandle<Result<(u64, u64), FileError>>;

pub fn start_unpack(dest: PathBuf) -> (mpsc::Sender<Vec<u8>>, UnpackTask) {
    let (tx, rx) = mpsc::channel(16);
    let handle = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dest)?;
        let mut reader = CountingReader { inner: ChannelReader { rx, buf: Vec::new(), pos: 0 }, count: 0 };
        let mut entries = 0u64;
        {
            let mut archive = tar::Archive::new(&mut reader);
            archive.set_preserve_permissions(true);
            archive.set_overwrite(true);
            archive.set_unpack_xattrs(false);
            for entry in archive.entries().map_err(bad_tar)? {
                let mut entry = entry.map_err(bad_tar)?;
                // unpack_in refuses paths that escape dest (absolute paths, "..").
                if entry.unpack_in(&dest).map_err(bad_tar)? {
                    entries += 1;
                }
            }
        }
        // Drain anything after the end-of-archive marker so the sender never blocks.
        std::io::copy(&mut reader, &mut std::io::sink())?;
        Ok((reader.count, entries))
    });
    (tx, handle)
}

fn bad_tar(e: std::io::Error) -> FileError {
    FileError::InvalidArgument(format!("the upload is not a valid tar stream: {e}"))
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
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
    let name: PathBuf = p.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let errors = tx.clone();
        let mut builder = tar::Builder::new(ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) });
        builder.follow_symlinks(false);
        let packed = pack(&mut builder, &p, &name, meta.is_dir()).and_then(|_| builder.into_inner()?.flush());
        if let Err(e) = packed {
            let _ = errors.blocking_send(Err(FileError::Io(e)));
        }
    });
    Ok(rx)
}

fn pack<W: Write>(b: &mut tar::Builder<W>, path: &Path, name: &Path, dir: bool) -> std::io::Result<()> {
    if dir { b.append_dir_all(name, path) } else { b.append_path_with_name(path, name) }
}
