//! Property test of the queue handling of every device against random guest memory: random descriptor tables
//! (addresses in and out of memory, any length, any flags including INDIRECT, any `next`), random available rings
//! and indices, random request headers. The property: no panic, and every call returns (descriptor loops and huge
//! lengths are bounded). By default a short run; `BOXYARD_VMM_FUZZ_SECS=600` runs for ten minutes.

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::block::request::{Disk, process_queue as block_queue};
use super::console::ports::{NUM_QUEUES, Ports};
use super::rng::request::process_queue as rng_queue;
use super::test_utils::TestQueue;

/// xorshift64*: deterministic per seed, no dependency.
struct Rand(u64);

impl Rand {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Fills the whole 1 MiB of guest memory with random bytes, then writes biased descriptors and rings for a queue
/// of `size` at 0: addresses mostly inside memory, lengths mostly small, heads and `next` mostly in range.
fn scramble(tq: &mut TestQueue, r: &mut Rand, size: u16) {
    let mut chunk = vec![0u8; 4096];
    for page in 0..256u64 {
        for b in chunk.chunks_mut(8) {
            b.copy_from_slice(&r.next().to_le_bytes());
        }
        tq.mem.write_slice(&chunk, GuestAddress(page * 4096)).unwrap();
    }
    for i in 0..size {
        let addr = match r.below(8) {
            0 => r.next(),
            1 => 0x10_0000 - r.below(64),
            _ => 0x10000 + r.below(0xe0000),
        };
        let len = match r.below(8) {
            0 => r.next() as u32,
            1 => 0,
            _ => r.below(4096) as u32 + 1,
        };
        let flags = match r.below(8) {
            0 => r.next() as u16,
            1 => 4, // INDIRECT
            _ => r.below(4) as u16,
        };
        let next = if r.below(8) == 0 { r.next() as u16 } else { r.below(u64::from(size)) as u16 };
        tq.set_desc(i, super::test_utils::Desc { addr, len, flags, next });
    }
    // The used ring must stay writable for the queue to be valid; its index is random too.
    let entries = r.below(u64::from(size) * 2) as u16;
    for _ in 0..entries {
        let head = if r.below(8) == 0 { r.next() as u16 } else { r.below(u64::from(size)) as u16 };
        tq.publish(head);
    }
    if r.below(8) == 0 {
        tq.mem.write_obj(r.next() as u16, GuestAddress(0x1000 + 2)).unwrap();
    }
}

/// Returns (iterations, iterations in which the device completed at least one chain).
fn run_for(limit: Duration, min_iterations: u64) -> (u64, u64) {
    let start = Instant::now();
    let mut r = Rand(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let disk_file = tempfile::tempfile().unwrap();
    disk_file.set_len(64 * 1024).unwrap();
    let mut disk = Disk::from_file(disk_file, false, "fuzz").unwrap();
    let (mut n, mut served) = (0u64, 0u64);
    while n < min_iterations || start.elapsed() < limit {
        let size = 1u16 << (1 + r.below(8));
        let mut tq = TestQueue::new(size);
        scramble(&mut tq, &mut r, size);
        match n % 3 {
            0 => {
                let mut q = tq.queue();
                let a = block_queue(&mut q, &tq.mem, &mut disk);
                let b = block_queue(&mut q, &tq.mem, &mut disk);
                served += u64::from(a || b);
            }
            1 => {
                let mut q = tq.queue();
                served += u64::from(rng_queue(&mut q, &tq.mem));
            }
            _ => {
                // Every console queue over the same scrambled table.
                let queues = (0..NUM_QUEUES).map(|_| tq.queue()).collect();
                let mut p = Ports::new(tq.mem.clone(), queues, "fuzz");
                p.set_host_connected(r.below(2) == 0);
                let mut used = p.process_control();
                let data = vec![0x5a; r.below(100_000) as usize];
                used |= p.fill_rx(&data).1;
                while p.take_tx().is_some() {
                    used = true;
                }
                used |= p.drain_unused();
                used |= p.process_control();
                served += u64::from(used);
            }
        }
        n += 1;
    }
    (n, served)
}

#[test]
fn random_descriptor_tables_never_panic_or_hang() {
    let secs = std::env::var("BOXYARD_VMM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let started = Instant::now();
    let (n, served) = run_for(Duration::from_secs(secs), 300);
    eprintln!(
        "queue property test: {n} random queues ({served} with chains served) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The generator must reach the request paths, not only the queue-level rejections.
    assert!(served * 5 > n, "only {served} of {n} random queues had a chain served");
}
