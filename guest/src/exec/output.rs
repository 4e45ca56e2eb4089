//! The output ring of one execution: every byte the process writes, at its cursor, until the host acknowledges it.
//!
//! Cursors count bytes of the execution's combined output (stdout and stderr interleaved in arrival order), from 0.
//! The ring holds `[retained_from, end)`. Writers reserve space *before* they read from the process, so a full ring
//! back-pressures the process (its pipe fills and its writes block) and never drops a byte. Readers start at any
//! cursor the ring still holds; acknowledgements release space.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use boxyard_proto::agent::Stream;
use tokio::sync::watch;

/// A contiguous piece of output from one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub stream: Stream,
    pub cursor: u64,
    pub data: Vec<u8>,
}

/// Where the ring stands, published to waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub retained_from: u64,
    pub end: u64,
    /// No more output will be appended.
    pub closed: bool,
}

/// A read asked for a cursor the ring no longer (or not yet) holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("cursor {cursor} was already acknowledged and released; the agent holds output from {retained_from}")]
    Released { cursor: u64, retained_from: u64 },
    #[error("cursor {cursor} is beyond the end of the output ({end})")]
    Beyond { cursor: u64, end: u64 },
}

struct Inner {
    chunks: VecDeque<Chunk>,
    pos: Position,
}

/// The bounded, acknowledged output buffer of one execution.
pub struct OutputRing {
    capacity: usize,
    inner: Mutex<Inner>,
    tx: watch::Sender<Position>,
}

impl OutputRing {
    /// A ring holding at most `capacity` unacknowledged bytes (at least 4 KiB).
    pub fn new(capacity: usize) -> Self {
        let pos = Position { retained_from: 0, end: 0, closed: false };
        let (tx, _) = watch::channel(pos);
        OutputRing { capacity: capacity.max(4096), inner: Mutex::new(Inner { chunks: VecDeque::new(), pos }), tx }
    }

    pub fn position(&self) -> Position {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).pos
    }

    /// Subscribes to position changes.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.tx.subscribe()
    }

    /// Waits until at least one byte can be stored; returns how many bytes may be appended now.
    pub async fn reserve(&self) -> usize {
        let mut rx = self.tx.subscribe();
        loop {
            let free = {
                let pos = *rx.borrow_and_update();
                // Two pumps (stdout, stderr) may both fill the last free space, so the ring can hold more than its
                // capacity for a moment: saturate instead of underflowing.
                self.capacity.saturating_sub((pos.end - pos.retained_from) as usize)
            };
            if free > 0 {
                return free;
            }
            // The sender lives as long as self, so changed() only fails if the ring is gone.
            if rx.changed().await.is_err() {
                return 0;
            }
        }
    }

    /// Appends output. Callers keep `data.len()` within what [`reserve`](Self::reserve) granted; a larger append is
    /// still stored (nothing is ever dropped), it only overshoots the bound once.
    pub fn append(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let cursor = inner.pos.end;
        match inner.chunks.back_mut() {
            // Coalesce small writes of one stream so chunks stay a reasonable size.
            Some(last) if last.stream == stream && last.data.len() + data.len() <= 64 * 1024 => {
                last.data.extend_from_slice(data)
            }
            _ => inner.chunks.push_back(Chunk { stream, cursor, data: data.to_vec() }),
        }
        inner.pos.end += data.len() as u64;
        self.tx.send_replace(inner.pos);
    }

    /// Marks the output complete.
    pub fn close(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.pos.closed = true;
        self.tx.send_replace(inner.pos);
    }

    /// Releases everything below `cursor` (clamped to the end). Acknowledging backwards is a no-op.
    pub fn ack(&self, cursor: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let cursor = cursor.min(inner.pos.end);
        if cursor <= inner.pos.retained_from {
            return;
        }
        while let Some(front) = inner.chunks.front_mut() {
            let front_end = front.cursor + front.data.len() as u64;
            if front_end <= cursor {
                inner.chunks.pop_front();
            } else {
                if front.cursor < cursor {
                    front.data.drain(..(cursor - front.cursor) as usize);
                    front.cursor = cursor;
                }
                break;
            }
        }
        inner.pos.retained_from = cursor;
        self.tx.send_replace(inner.pos);
    }

    /// Copies up to `max` bytes from `cursor` on, as chunks. Empty when `cursor` is the end.
    pub fn read(&self, cursor: u64, max: usize) -> Result<Vec<Chunk>, ReadError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let pos = inner.pos;
        if cursor < pos.retained_from {
            return Err(ReadError::Released { cursor, retained_from: pos.retained_from });
        }
        if cursor > pos.end {
            return Err(ReadError::Beyond { cursor, end: pos.end });
        }
        let mut out = Vec::new();
        let mut budget = max;
        // Chunks are sorted by cursor: find the first one that ends after `cursor`.
        let start = inner.chunks.partition_point(|c| c.cursor + c.data.len() as u64 <= cursor);
        for c in inner.chunks.range(start..) {
            if budget == 0 {
                break;
            }
            let skip = cursor.saturating_sub(c.cursor) as usize;
            let take = (c.data.len() - skip).min(budget);
            out.push(Chunk {
                stream: c.stream,
                cursor: c.cursor + skip as u64,
                data: c.data[skip..skip + take].to_vec(),
            });
            budget -= take;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &OutputRing, from: u64) -> Vec<u8> {
        r.read(from, usize::MAX).unwrap().into_iter().flat_map(|c| c.data).collect()
    }

    #[test]
    fn cursors_are_contiguous_across_streams() {
        let r = OutputRing::new(1 << 20);
        r.append(Stream::Stdout, b"hello ");
        r.append(Stream::Stderr, b"err ");
        r.append(Stream::Stdout, b"world");
        let chunks = r.read(0, usize::MAX).unwrap();
        assert_eq!(chunks.len(), 3);
        assert_eq!((chunks[1].stream, chunks[1].cursor), (Stream::Stderr, 6));
        assert_eq!(collect(&r, 3), b"lo err world");
        assert_eq!(r.read(15, 100).unwrap(), vec![]);
        assert_eq!(r.read(16, 1), Err(ReadError::Beyond { cursor: 16, end: 15 }));
    }

    #[test]
    fn ack_releases_and_splits() {
        let r = OutputRing::new(1 << 20);
        r.append(Stream::Stdout, b"0123456789");
        r.ack(4);
        assert_eq!(collect(&r, 4), b"456789");
        assert_eq!(r.read(3, 1), Err(ReadError::Released { cursor: 3, retained_from: 4 }));
        r.ack(2); // backwards: no-op
        assert_eq!(r.position().retained_from, 4);
        r.ack(100); // clamped
        assert_eq!(r.position().retained_from, 10);
    }

    #[test]
    fn read_respects_budget() {
        let r = OutputRing::new(1 << 20);
        r.append(Stream::Stdout, b"aaaa");
        r.append(Stream::Stderr, b"bbbb");
        let chunks = r.read(2, 3).unwrap();
        let total: usize = chunks.iter().map(|c| c.data.len()).sum();
        assert_eq!(total, 3);
        assert_eq!(chunks[1].cursor, 4);
    }

    #[tokio::test]
    async fn full_ring_blocks_reserve_until_ack() {
        let r = std::sync::Arc::new(OutputRing::new(4096));
        assert_eq!(r.reserve().await, 4096);
        r.append(Stream::Stdout, &[b'x'; 4096]);
        let r2 = r.clone();
        let waiter = tokio::spawn(async move { r2.reserve().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a full ring must back-pressure the writer");
        r.ack(1000);
        assert_eq!(waiter.await.unwrap(), 1000);
    }
}
