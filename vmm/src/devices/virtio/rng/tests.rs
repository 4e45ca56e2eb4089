//! virtio-rng driven through hand-built chains.

use super::request::*;
use crate::devices::virtio::test_utils::TestQueue;

#[test]
fn fills_writable_buffers_with_random_bytes() {
    let mut tq = TestQueue::new(8);
    tq.add_chain(0, &[(0x10000, 256, true), (0x20000, 256, true)]);
    let mut q = tq.queue();
    assert!(process_queue(&mut q, &tq.mem));
    assert_eq!(tq.used(0), (0, 512));
    let a = tq.read(0x10000, 256);
    let b = tq.read(0x20000, 256);
    assert!(a.iter().any(|x| *x != 0) && b.iter().any(|x| *x != 0));
    assert_ne!(a, b);
}

#[test]
fn readable_only_chains_get_nothing_and_huge_chains_are_capped() {
    let mut tq = TestQueue::new(8);
    tq.add_chain(0, &[(0x10000, 64, false)]);
    tq.add_chain(1, &[(0x10000, 0xe0000, true)]);
    let mut q = tq.queue();
    assert!(process_queue(&mut q, &tq.mem));
    assert_eq!(tq.used(0), (0, 0));
    assert_eq!(tq.used(1), (1, MAX_PER_CHAIN as u32));
}
