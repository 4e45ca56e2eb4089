//! virtio-blk requests: a readable 16-byte header (type, reserved, sector), data buffers, and a final writable
//! status byte. Every malformed request (short header, no status byte, unreadable buffers, out-of-range sectors, a
//! write to a read-only disk) completes with an error status when a status byte exists and with zero length when it
//! does not; nothing a guest puts in a queue makes the VMM panic. Data is copied through a bounded buffer, so the
//! size of a request never sizes an allocation.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::{Queue, QueueT};

/// Request type: read sectors.
pub const T_IN: u32 = 0;
/// Request type: write sectors.
pub const T_OUT: u32 = 1;
/// Request type: flush the write cache.
pub const T_FLUSH: u32 = 4;
/// Request type: the device's serial (20 bytes).
pub const T_GET_ID: u32 = 8;
/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error (also: malformed request).
pub const S_IOERR: u8 = 1;
/// Status: unsupported request type.
pub const S_UNSUPP: u8 = 2;
/// Sector size of the protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial returned by GET_ID.
pub const ID_LEN: usize = 20;
const CHUNK: usize = 64 * 1024;

/// The disk image behind a device.
pub struct Disk {
    file: File,
    read_only: bool,
    size: u64,
    id: [u8; ID_LEN],
}

impl Disk {
    /// Opens `path` (read-only when `read_only`) with serial `id` (truncated to 20 bytes).
    pub fn open(path: &std::path::Path, read_only: bool, id: &str) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::from_file(file, read_only, id)
    }

    /// A disk on an open file.
    pub fn from_file(file: File, read_only: bool, id: &str) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        let mut serial = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self { file, read_only, size, id: serial })
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Capacity in 512-byte sectors (a partial last sector is not addressable).
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Byte offset of `sector` if `len` bytes from there are inside the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(len as u64)?;
        (end <= self.sectors() * SECTOR_SIZE).then_some(off)
    }
}

/// Serves every available request on `queue`; returns whether any completed (the driver needs an interrupt).
pub fn process_queue(queue: &mut Queue, mem: &GuestMemoryMmap, disk: &mut Disk) -> bool {
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let len = execute(chain, mem, disk);
        // A head outside the queue cannot be returned to the driver: it is dropped, and the queue goes on.
        if queue.add_used(mem, head, len).is_ok() {
            used = true;
        }
    }
    used
}

/// Executes one request; returns the bytes written into the chain (data and status).
pub fn execute(chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap, disk: &mut Disk) -> u32 {
    let Ok(mut data) = chain.clone().writer(mem) else { return 0 };
    let avail = data.available_bytes();
    if avail == 0 {
        return 0;
    }
    let Ok(mut status_w) = data.split_at(avail - 1) else { return 0 };
    let status = match chain.reader(mem) {
        Ok(mut reader) => run(&mut reader, &mut data, disk),
        Err(_) => S_IOERR,
    };
    let written = data.bytes_written();
    if status_w.write_all(&[status]).is_err() {
        return written as u32;
    }
    (written + 1) as u32
}

fn run(reader: &mut Reader<'_>, data: &mut Writer<'_>, disk: &mut Disk) -> u8 {
    let mut hdr = [0u8; 16];
    if reader.read_exact(&mut hdr).is_err() {
        crate::metrics::METRICS.block_errors.inc();
        return S_IOERR;
    }
    let kind = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
    let m = &crate::metrics::METRICS;
    let result = match kind {
        T_IN => {
            let len = data.available_bytes() as u64;
            read_sectors(data, disk, sector).inspect(|_| m.block_read_bytes.add(len))
        }
        T_OUT if disk.read_only => Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        T_OUT => {
            let len = reader.available_bytes() as u64;
            write_sectors(reader, disk, sector).inspect(|_| m.block_write_bytes.add(len))
        }
        T_FLUSH if disk.read_only => Ok(()),
        T_FLUSH => disk.file.sync_data().inspect(|_| m.block_flushes.inc()),
        T_GET_ID => {
            let n = data.available_bytes().min(ID_LEN);
            data.write_all(&disk.id[..n])
        }
        _ => return S_UNSUPP,
    };
    if result.is_ok() {
        S_OK
    } else {
        m.block_errors.inc();
        S_IOERR
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "sectors outside the disk")
}

fn read_sectors(data: &mut Writer<'_>, disk: &Disk, sector: u64) -> std::io::Result<()> {
    let len = data.available_bytes();
    let mut off = disk.range(sector, len).ok_or_else(out_of_range)?;
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        disk.file.read_exact_at(&mut buf[..n], off)?;
        data.write_all(&buf[..n])?;
        off += n as u64;
        left -= n;
    }
    Ok(())
}

fn write_sectors(reader: &mut Reader<'_>, disk: &Disk, sector: u64) -> std::io::Result<()> {
    let len = reader.available_bytes();
    let mut off = disk.range(sector, len).ok_or_else(out_of_range)?;
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        reader.read_exact(&mut buf[..n])?;
        disk.file.write_all_at(&buf[..n], off)?;
        off += n as u64;
        left -= n;
    }
    Ok(())
}
