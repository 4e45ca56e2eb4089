//! The execution output log: one durable, append-only log per execution on the runner's disk.
//!
//! Every output byte of an execution has a cursor (its position in the execution's combined output). The log stores
//! stdout and stderr records interleaved in arrival order, in segment files named by the cursor of their first byte
//! (`<dir>/<cursor:020>.seg`, see [`record`] for the record format).
//!
//! - **Idempotent appends by cursor**: appending bytes the log already has is a no-op, so a pump that restarts from
//!   the log's end (after a runner restart) never duplicates. A cursor beyond the end is refused.
//! - **Durability**: [`ExecLog::sync`] flushes to disk; callers acknowledge output to the guest only after it.
//! - **Torn tails**: on open, the newest segment is scanned and cut at its first incomplete or corrupt record.
//! - **Retention**: when the retained bytes exceed the cap, whole oldest segments are deleted; a reader asking for a
//!   cursor before the oldest retained one gets an explicit [`Item::Gap`] first.
//! - **Readers** ([`LogReader`]) are independent of the writer and of each other, each with its own file handle
//!   and a bounded read size; a reader holds the log (an `Arc`), so it can move to a blocking thread.
//!
//! The API is blocking file I/O: call it from a blocking thread (`spawn_blocking`), not from async tasks.

pub mod record;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use record::HEADER;
use tokio::sync::watch;

use crate::storage::{Area, Op, Storage};

/// Limits of one execution's log.
#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    /// Largest segment file (records with their headers); a new segment starts when the next record would not fit.
    pub segment_bytes: u64,
    /// Output bytes retained; older segments are deleted (default 64 MiB).
    pub retention_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { segment_bytes: 8 << 20, retention_bytes: 64 << 20 }
    }
}

/// What the log holds, published to tailing readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Oldest retained cursor.
    pub start: u64,
    /// Cursor after the last stored byte.
    pub end: u64,
}

/// One item read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Output in `[from, to)` was dropped by retention.
    Gap {
        /// The first dropped cursor.
        from: u64,
        /// The cursor after the last dropped byte.
        to: u64,
    },
    /// Bytes of stream 1 (stdout) or 2 (stderr) at `cursor`.
    Data {
        /// 1 (stdout) or 2 (stderr).
        stream: u8,
        /// The cursor of the first byte.
        cursor: u64,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// An error of the execution log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An append that does not start at or before the log's end.
    #[error("append at cursor {cursor} would leave a hole: the log ends at {end}")]
    Hole {
        /// Where the append started.
        cursor: u64,
        /// Where the log ends.
        end: u64,
    },
    /// A read past the log's end.
    #[error("cursor {cursor} is beyond the end of the log ({end})")]
    Beyond {
        /// The cursor asked for.
        cursor: u64,
        /// Where the log ends.
        end: u64,
    },
    /// The disk failed.
    #[error("execution log I/O error in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

struct Segment {
    start: u64,
    /// Cursor after its last byte.
    end: u64,
    path: PathBuf,
}

struct State {
    segments: Vec<Segment>,
    active: Option<File>,
    active_bytes: u64,
}

/// The log of one execution.
pub struct ExecLog {
    dir: PathBuf,
    config: LogConfig,
    /// Writes, fsyncs and creations go through it (failure counter, injected faults).
    storage: Arc<Storage>,
    state: Mutex<State>,
    tx: watch::Sender<Position>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.seg"))
}

/// Scans a segment; returns (end cursor, byte length of its valid prefix).
fn scan(path: &Path, start: u64) -> std::io::Result<(u64, u64)> {
    let mut f = std::io::BufReader::new(File::open(path)?);
    let (mut cursor, mut valid) = (start, 0u64);
    let mut hb = [0u8; HEADER];
    let mut data = Vec::new();
    loop {
        if f.read_exact(&mut hb).is_err() {
            break;
        }
        let Some(h) = record::decode_header(&hb) else { break };
        data.resize(h.len as usize, 0);
        if f.read_exact(&mut data).is_err() || h.cursor != cursor || !record::verify(&hb, &h, &data) {
            break;
        }
        cursor += h.len as u64;
        valid += (HEADER + data.len()) as u64;
    }
    Ok((cursor, valid))
}

impl ExecLog {
    /// Opens (creating if needed) the log in `dir`, cutting a torn tail left by a crash.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Arc<Self>, LogError> {
        Self::open_with(dir, config, Arc::new(Storage::new()))
    }

    /// [`open`](Self::open) with the runner's storage (its failure counter and any injected fault).
    pub fn open_with(dir: &Path, config: LogConfig, storage: Arc<Storage>) -> Result<Arc<Self>, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut starts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        starts.sort_unstable();
        let mut segments = Vec::new();
        for (i, &start) in starts.iter().enumerate() {
            let path = segment_path(dir, start);
            let (end, valid) = scan(&path, start).map_err(io_err(&path))?;
            let last = i + 1 == starts.len();
            if last {
                // Cut the torn tail of the newest segment.
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                if f.metadata().map_err(io_err(&path))?.len() != valid {
                    f.set_len(valid).map_err(io_err(&path))?;
                    f.sync_data().map_err(io_err(&path))?;
                }
            }
            segments.push(Segment { start, end, path });
        }
        let pos =
            Position { start: segments.first().map_or(0, |s| s.start), end: segments.last().map_or(0, |s| s.end) };
        let (tx, _) = watch::channel(pos);
        Ok(Arc::new(ExecLog {
            dir: dir.to_path_buf(),
            config,
            storage,
            state: Mutex::new(State { segments, active: None, active_bytes: 0 }),
            tx,
        }))
    }

    /// What the log holds now.
    pub fn position(&self) -> Position {
        *self.tx.borrow()
    }

    /// Subscribes to position changes (to tail the log).
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.tx.subscribe()
    }

    /// Appends `data` that starts at `cursor`. Bytes the log already holds are skipped; a cursor beyond the end is
    /// refused. Not durable until [`sync`](Self::sync).
    pub fn append(&self, stream: u8, cursor: u64, data: &[u8]) -> Result<(), LogError> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = st.segments.last().map_or(0, |s| s.end);
        if cursor > end {
            return Err(LogError::Hole { cursor, end });
        }
        let skip = (end - cursor) as usize;
        if skip >= data.len() {
            return Ok(());
        }
        let mut rest = &data[skip..];
        let mut cursor = end;
        while !rest.is_empty() {
            if st.active.is_none() || !self.has_room(st.active_bytes) {
                self.roll(&mut st, cursor)?;
            }
            // Records are split at the segment's limit, so no segment outgrows it (at least one byte per record,
            // for a limit smaller than a record header).
            let room = self.config.segment_bytes.saturating_sub(st.active_bytes + HEADER as u64).max(1);
            let n = rest.len().min(record::MAX_DATA).min(usize::try_from(room).unwrap_or(usize::MAX));
            let mut buf = Vec::with_capacity(HEADER + n);
            record::encode(stream, cursor, &rest[..n], &mut buf);
            let path = st.segments.last().expect("roll made a segment").path.clone();
            let before = st.active_bytes;
            let active = st.active.as_mut().expect("roll opened the active segment");
            if let Err(e) = self.storage.run(Area::Log, Op::Write, || active.write_all(&buf)) {
                // Cut what may have been written partially, so the segment ends at a record boundary again and the
                // next append (the pump retries) starts from the last good byte.
                let f = st.active.take().expect("roll opened the active segment");
                let _ = f.set_len(before);
                return Err(LogError::Io { path, source: e });
            }
            st.segments.last_mut().expect("roll made a segment").end += n as u64;
            st.active_bytes += buf.len() as u64;
            cursor += n as u64;
            rest = &rest[n..];
        }
        self.enforce_retention(&mut st);
        let pos = Position { start: st.segments.first().map_or(0, |s| s.start), end: cursor };
        self.tx.send_replace(pos);
        Ok(())
    }

    /// Starts a new segment at `cursor` (or reopens the newest one for appending after a restart).
    fn roll(&self, st: &mut State, cursor: u64) -> Result<(), LogError> {
        if st.active.is_none()
            && let Some(last) = st.segments.last()
        {
            let len = std::fs::metadata(&last.path).map_err(io_err(&last.path))?.len();
            if self.has_room(len) {
                let f = OpenOptions::new().append(true).open(&last.path).map_err(io_err(&last.path))?;
                st.active = Some(f);
                st.active_bytes = len;
                return Ok(());
            }
        }
        if let Some(f) = st.active.take() {
            let last = st.segments.last().expect("an active segment exists").path.clone();
            if let Err(e) = self.storage.run(Area::Log, Op::Sync, || f.sync_data()) {
                // Keep it active, so the next append tries this sync again before anything after it counts.
                st.active = Some(f);
                return Err(io_err(&last)(e));
            }
        }
        let path = segment_path(&self.dir, cursor);
        let f = self
            .storage
            .run(Area::Log, Op::Create, || OpenOptions::new().create(true).append(true).open(&path))
            .map_err(io_err(&path))?;
        // The new file's directory entry must be durable too before anything in it is acknowledged.
        self.storage
            .run(Area::Log, Op::Sync, || File::open(&self.dir).and_then(|d| d.sync_all()))
            .map_err(io_err(&self.dir))?;
        st.segments.push(Segment { start: cursor, end: cursor, path });
        st.active = Some(f);
        st.active_bytes = 0;
        Ok(())
    }

    /// Whether a segment holding `bytes` of records can take a record with at least one byte of data.
    fn has_room(&self, bytes: u64) -> bool {
        bytes + (HEADER as u64) < self.config.segment_bytes
    }

    fn enforce_retention(&self, st: &mut State) {
        let end = st.segments.last().map_or(0, |s| s.end);
        while st.segments.len() > 1 && end - st.segments[1].start >= self.config.retention_bytes {
            let old = st.segments.remove(0);
            let _ = std::fs::remove_file(&old.path);
        }
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), LogError> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(f), Some(seg)) = (&st.active, st.segments.last()) {
            self.storage.run(Area::Log, Op::Sync, || f.sync_data()).map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    /// A reader positioned at `cursor`.
    pub fn reader(self: &Arc<Self>, cursor: u64) -> LogReader {
        LogReader { log: self.clone(), cursor, file: None }
    }

    fn locate(&self, cursor: u64) -> Result<Option<(u64, u64, PathBuf)>, LogError> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = st.segments.last().map_or(0, |s| s.end);
        if cursor > end {
            return Err(LogError::Beyond { cursor, end });
        }
        Ok(st.segments.iter().find(|s| s.start <= cursor && cursor < s.end).map(|s| (s.start, s.end, s.path.clone())))
    }
}

/// Reads a log from a cursor at its own pace, with its own file handle.
pub struct LogReader {
    log: Arc<ExecLog>,
    /// The next cursor to read.
    pub cursor: u64,
    /// The open segment: its start cursor, the file, and the byte offset of the next record in it.
    file: Option<(u64, std::io::BufReader<File>, u64)>,
}

/// Reads one whole record; None at the end of what is written so far.
fn read_record(f: &mut std::io::BufReader<File>, path: &Path) -> Result<Option<(record::Header, Vec<u8>)>, LogError> {
    let mut hb = [0u8; HEADER];
    if f.read_exact(&mut hb).is_err() {
        return Ok(None);
    }
    let corrupt = || LogError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt record in the execution log"),
    };
    let h = record::decode_header(&hb).ok_or_else(corrupt)?;
    let mut data = vec![0u8; h.len as usize];
    if f.read_exact(&mut data).is_err() {
        return Ok(None);
    }
    if !record::verify(&hb, &h, &data) {
        return Err(corrupt());
    }
    Ok(Some((h, data)))
}

impl LogReader {
    /// Reads up to about `max` bytes from the current cursor (a record is never split across calls beyond what it
    /// holds). Empty when the reader is at the end of the log.
    pub fn read(&mut self, max: usize) -> Result<Vec<Item>, LogError> {
        let end = self.log.position().end;
        if self.cursor > end {
            return Err(LogError::Beyond { cursor: self.cursor, end });
        }
        let mut items = Vec::new();
        let mut budget = max.max(1);
        while budget > 0 {
            let pos = self.log.position();
            if self.cursor < pos.start {
                items.push(Item::Gap { from: self.cursor, to: pos.start });
                self.cursor = pos.start;
                self.file = None;
            }
            if self.cursor >= pos.end {
                break;
            }
            if self.file.is_none() {
                let Some((start, _, path)) = self.log.locate(self.cursor)? else { continue };
                let f = match File::open(&path) {
                    Ok(f) => f,
                    // Retention deleted the segment since it was located: the loop's top reports the gap.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.log.position().start > self.cursor => {
                        continue;
                    }
                    Err(e) => return Err(io_err(&path)(e)),
                };
                self.file = Some((start, std::io::BufReader::with_capacity(256 * 1024, f), 0));
            }
            let (seg_start, f, offset) = self.file.as_mut().expect("the segment file was opened just above");
            let path = segment_path(&self.log.dir, *seg_start);
            match read_record(f, &path)? {
                Some((h, mut data)) => {
                    *offset += (HEADER + data.len()) as u64;
                    let rec_end = h.cursor + h.len as u64;
                    if rec_end <= self.cursor {
                        continue;
                    }
                    let data = data.split_off((self.cursor - h.cursor) as usize);
                    budget = budget.saturating_sub(data.len());
                    self.cursor = rec_end;
                    items.push(Item::Data { stream: h.stream, cursor: rec_end - data.len() as u64, data });
                }
                None => {
                    // The end of what this segment holds now: rewind to the record boundary, then either move to
                    // the next segment or wait for the writer.
                    let (start, off) = (*seg_start, *offset);
                    f.seek(SeekFrom::Start(off)).map_err(io_err(&path))?;
                    match self.log.locate(self.cursor)? {
                        Some((next, _, _)) if next != start => self.file = None,
                        _ => break,
                    }
                }
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests;
