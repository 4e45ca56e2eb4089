//! Hand-built split virtqueues in guest memory, for the devices' unit tests: the test writes raw descriptors and
//! the available ring itself (so it can also write malformed ones) and reads back the used ring.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Queue, QueueT};

/// Descriptor flag: the chain continues at `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is an indirect descriptor table.
pub const F_INDIRECT: u16 = 4;

/// One raw descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    /// Guest address of the buffer.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Flags (F_NEXT, F_WRITE).
    pub flags: u16,
    /// Next descriptor index when F_NEXT.
    pub next: u16,
}

/// A queue of `size` entries laid out at `base` in `mem`.
pub struct TestQueue {
    /// The guest memory the queue lives in.
    pub mem: GuestMemoryMmap,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
}

impl TestQueue {
    /// Guest memory of 1 MiB with a queue at 0 (desc), 0x1000 (avail), 0x2000 (used); buffers go from 0x10000.
    pub fn new(size: u16) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        Self::at(mem, 0, size)
    }

    /// A queue in shared `mem` at `base` (desc), `base + 0x1000` (avail), `base + 0x2000` (used).
    pub fn at(mem: GuestMemoryMmap, base: u64, size: u16) -> Self {
        Self { mem, size, desc: base, avail: base + 0x1000, used: base + 0x2000, avail_idx: 0 }
    }

    /// A `Queue` configured and ready, as a driver would leave it.
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail as u32), Some(0));
        q.set_used_ring_address(Some(self.used as u32), Some(0));
        q.set_ready(true);
        assert!(q.is_valid(&self.mem));
        q
    }

    /// Writes descriptor `index`.
    pub fn set_desc(&self, index: u16, d: Desc) {
        let a = GuestAddress(self.desc + 16 * u64::from(index));
        self.mem.write_obj(d.addr, a).unwrap();
        self.mem.write_obj(d.len, GuestAddress(a.0 + 8)).unwrap();
        self.mem.write_obj(d.flags, GuestAddress(a.0 + 12)).unwrap();
        self.mem.write_obj(d.next, GuestAddress(a.0 + 14)).unwrap();
    }

    /// Writes `chain` as descriptors `first..`, linked in order, and makes its head available.
    pub fn add_chain(&mut self, first: u16, chain: &[(u64, u32, bool)]) {
        for (i, (addr, len, write)) in chain.iter().enumerate() {
            let idx = first + i as u16;
            let more = i + 1 < chain.len();
            let flags = if *write { F_WRITE } else { 0 } | if more { F_NEXT } else { 0 };
            self.set_desc(idx, Desc { addr: *addr, len: *len, flags, next: if more { idx + 1 } else { 0 } });
        }
        self.publish(first);
    }

    /// Makes descriptor `head` available to the device.
    pub fn publish(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2)).unwrap();
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used element `i`: (descriptor head, bytes written).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let a = self.used + 4 + 8 * u64::from(i % self.size);
        (self.mem.read_obj(GuestAddress(a)).unwrap(), self.mem.read_obj(GuestAddress(a + 4)).unwrap())
    }

    /// Writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    /// Reads `len` bytes at `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}
