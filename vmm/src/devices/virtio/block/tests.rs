//! virtio-blk driven through hand-built descriptor chains: reads, writes, flush, GET_ID, and malformed chains.

use std::io::Write;

use super::request::*;
use crate::devices::virtio::test_utils::{Desc, F_NEXT, F_WRITE, TestQueue};

const HDR: u64 = 0x10000;
const DATA: u64 = 0x11000;
const STATUS: u64 = 0x20000;

fn disk(read_only: bool) -> (tempfile::NamedTempFile, Disk) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let pattern: Vec<u8> = (0..8 * 512).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect();
    f.write_all(&pattern).unwrap();
    f.flush().unwrap();
    let d = Disk::open(f.path(), read_only, "boxyard-root").unwrap();
    (f, d)
}

fn header(tq: &TestQueue, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    tq.write(HDR, &h);
}

/// Runs the queue once; returns (status byte, used length) of the one completed request.
fn run(tq: &TestQueue, d: &mut Disk) -> (u8, u32) {
    let mut q = tq.queue();
    assert!(process_queue(&mut q, &tq.mem, d), "a request completed");
    assert_eq!(tq.used_idx(), 1);
    (tq.read(STATUS, 1)[0], tq.used(0).1)
}

#[test]
fn read_copies_sectors_into_the_guest_buffer() {
    let (f, mut d) = disk(true);
    let mut tq = TestQueue::new(16);
    header(&tq, T_IN, 2);
    tq.write(STATUS, &[0xff]);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_OK, 1025));
    let file = std::fs::read(f.path()).unwrap();
    assert_eq!(tq.read(DATA, 1024), file[1024..2048]);
}

#[test]
fn read_data_split_over_several_descriptors() {
    let (f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, T_IN, 0);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 100, true), (DATA + 0x1000, 412, true), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_OK, 513));
    let file = std::fs::read(f.path()).unwrap();
    assert_eq!(tq.read(DATA, 100), file[..100]);
    assert_eq!(tq.read(DATA + 0x1000, 412), file[100..512]);
}

#[test]
fn write_reaches_the_file_and_flush_succeeds() {
    let (f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, T_OUT, 3);
    tq.write(DATA, &[0xab; 512]);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_OK, 1));
    let file = std::fs::read(f.path()).unwrap();
    assert!(file[3 * 512..4 * 512].iter().all(|b| *b == 0xab));
    assert_ne!(file[4 * 512], 0xab, "nothing past the request");

    let mut tq = TestQueue::new(16);
    header(&tq, T_FLUSH, 0);
    tq.write(STATUS, &[0xff]);
    tq.add_chain(0, &[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_OK, 1));
}

#[test]
fn write_to_a_read_only_disk_fails_and_leaves_it_unchanged() {
    let (f, mut d) = disk(true);
    let before = std::fs::read(f.path()).unwrap();
    let mut tq = TestQueue::new(16);
    header(&tq, T_OUT, 0);
    tq.write(DATA, &[0xcd; 512]);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d).0, S_IOERR);
    assert_eq!(std::fs::read(f.path()).unwrap(), before);
}

#[test]
fn get_id_returns_the_serial() {
    let (_f, mut d) = disk(true);
    let mut tq = TestQueue::new(16);
    header(&tq, T_GET_ID, 0);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_OK, 21));
    assert_eq!(&tq.read(DATA, 20)[..12], b"boxyard-root");
    assert_eq!(tq.read(DATA, 20)[12..], [0u8; 8]);
}

#[test]
fn unknown_type_is_unsupported_and_out_of_range_is_an_io_error() {
    let (_f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, 99, 0);
    tq.add_chain(0, &[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d).0, S_UNSUPP);

    for sector in [7, 8, u64::MAX / 512, u64::MAX] {
        let mut tq = TestQueue::new(16);
        header(&tq, T_IN, sector);
        tq.add_chain(0, &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
        assert_eq!(run(&tq, &mut d).0, S_IOERR, "sector {sector}");
    }
}

#[test]
fn short_header_gives_an_error_status() {
    let (_f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, T_IN, 0);
    tq.add_chain(0, &[(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d).0, S_IOERR);
}

#[test]
fn chain_without_a_writable_status_completes_with_zero_length() {
    let (f, mut d) = disk(false);
    let before = std::fs::read(f.path()).unwrap();
    let mut tq = TestQueue::new(16);
    header(&tq, T_OUT, 0);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 512, false)]);
    let mut q = tq.queue();
    assert!(process_queue(&mut q, &tq.mem, &mut d));
    assert_eq!(tq.used(0), (0, 0));
    assert_eq!(std::fs::read(f.path()).unwrap(), before, "a request without status is not executed");
}

#[test]
fn buffers_outside_guest_memory_never_panic() {
    let (_f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, T_IN, 0);
    // Data buffer beyond the 1 MiB of guest memory: the writer cannot be built, so nothing is written.
    tq.add_chain(0, &[(HDR, 16, false), (0x20_0000, 512, true), (STATUS, 1, true)]);
    let mut q = tq.queue();
    process_queue(&mut q, &tq.mem, &mut d);
    assert_eq!(tq.used_idx(), 1);
    assert_eq!(tq.used(0), (0, 0));

    // Header beyond memory: an error status.
    let mut tq = TestQueue::new(16);
    tq.add_chain(0, &[(0x30_0000, 16, false), (STATUS, 1, true)]);
    assert_eq!(run(&tq, &mut d), (S_IOERR, 1));
}

#[test]
fn descriptor_loops_and_bad_indices_end_without_a_hang_or_panic() {
    let (_f, mut d) = disk(false);
    let mut tq = TestQueue::new(16);
    header(&tq, T_IN, 0);
    tq.set_desc(0, Desc { addr: HDR, len: 16, flags: F_NEXT, next: 1 });
    tq.set_desc(1, Desc { addr: DATA, len: 512, flags: F_NEXT | F_WRITE, next: 0 });
    tq.publish(0);
    // A head index past the queue size.
    tq.publish(40);
    // `next` past the queue size.
    tq.set_desc(2, Desc { addr: HDR, len: 16, flags: F_NEXT, next: 999 });
    tq.publish(2);
    let mut q = tq.queue();
    process_queue(&mut q, &tq.mem, &mut d);
    // The looping chain is cut after queue-size descriptors (virtio-queue's TTL): it completes, bounded by the
    // 8 visits of its 512-byte writable descriptor; the bad head and the bad `next` complete without data.
    assert_eq!(tq.used_idx(), 2, "the two heads inside the queue completed; the one past it was dropped");
    let used: Vec<_> = (0..2).map(|i| tq.used(i)).collect();
    assert_eq!((used[0].0, used[1]), (0, (2, 0)));
    assert!(used[0].1 <= 8 * 512, "{used:?}");
    assert!(used.iter().all(|(_, len)| *len <= 8 * 512), "{used:?}");
}

#[test]
fn notification_through_the_transport_is_served_by_the_worker_thread() {
    use crate::bus::BusDevice;
    use crate::devices::virtio::mmio::{MmioTransport, status::*};
    use vmm_sys_util::eventfd::EventFd;

    let (f, d) = disk(true);
    let mut tq = TestQueue::new(16);
    let irq = EventFd::new(0).unwrap();
    let mut t = MmioTransport::new(Box::new(super::Block::new(d)), tq.mem.clone(), irq.try_clone().unwrap()).unwrap();
    let wr = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER);
    wr(&mut t, 0x24, 1);
    wr(&mut t, 0x20, 1);
    wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    wr(&mut t, 0x30, 0);
    wr(&mut t, 0x38, 16);
    wr(&mut t, 0x80, 0);
    wr(&mut t, 0x90, 0x1000);
    wr(&mut t, 0xa0, 0x2000);
    wr(&mut t, 0x44, 1);
    wr(&mut t, 0x70, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(t.is_activated());
    let mut cap = [0u8; 8];
    t.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8, "capacity in sectors");

    header(&tq, T_IN, 1);
    tq.add_chain(0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    wr(&mut t, 0x50, 0);
    // Blocking read of the irqfd: the worker interrupts once the request is done.
    assert!(irq.read().unwrap() >= 1);
    assert_eq!(tq.used_idx(), 1);
    assert_eq!(tq.read(STATUS, 1)[0], S_OK);
    assert_eq!(tq.read(DATA, 512), std::fs::read(f.path()).unwrap()[512..1024]);
    let mut isr = [0u8; 4];
    t.read(0x60, &mut isr);
    assert_eq!(isr[0] & 1, 1, "used-ring interrupt pending");
    wr(&mut t, 0x70, 0);
    assert!(!t.is_activated(), "reset stops the worker");
}
