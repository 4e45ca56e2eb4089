//! The guest physical address map and guest RAM.
//!
//! RAM is one anonymous memfd mapped shared, so a later snapshot can hand the same pages to another process. RAM
//! below 4 GiB stops at [`MMIO_GAP_START`]; the rest continues at 4 GiB. The fixed addresses of the boot structures
//! (zero page, command line, page tables, GDT), the ACPI tables and the device windows are all defined here, in one
//! place, so the boot code, the ACPI tables and the device setup cannot disagree.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Global descriptor table of the boot vCPU.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty) of the boot vCPU.
pub const IDT_ADDR: u64 = 0x520;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Level-4 page table of the identity map the kernel is entered with.
pub const PML4_ADDR: u64 = 0x9000;
/// Level-3 page table (one entry: the first GiB).
pub const PDPTE_ADDR: u64 = 0xa000;
/// Level-2 page table (512 × 2 MiB pages).
pub const PDE_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Largest command line accepted (the kernel's own limit on x86_64 is 2048 by default).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of the low RAM the e820 map reports as usable below the EBDA.
pub const EBDA_START: u64 = 0x9fc00;
/// The ACPI tables live here: inside the BIOS area the kernel scans for the RSDP.
pub const ACPI_ADDR: u64 = 0xe0000;
/// Size reserved for all ACPI tables.
pub const ACPI_SIZE: u64 = 0x10000;
/// Where the protected-mode kernel is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// First address above RAM in the 32-bit space: devices live between here and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Base of the virtio-mmio device windows, one [`VIRTIO_MMIO_SIZE`] page each.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First GSI given to virtio-mmio devices (ISA IRQs 0-4 are taken by the PIT, keyboard, cascade and COM1).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Largest number of virtio-mmio devices (GSIs 5..=23 of the IOAPIC, keeping some spare).
pub const VIRTIO_MAX_DEVICES: usize = 16;
/// GSI of the ACPI Generic Event Device (the power button), above the virtio devices' GSIs 5..=20.
pub const GED_GSI: u32 = 22;
/// The IOAPIC's MMIO base (the architectural default).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APICs' MMIO base (the architectural default).
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Where KVM keeps the TSS it needs for real-mode emulation on Intel (three pages, inside the MMIO gap).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The memfd could not be created or sized.
    #[error("guest memory memfd: {0}")]
    Memfd(std::io::Error),
    /// The regions could not be mapped.
    #[error("mapping guest memory: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
    /// Too little memory to boot.
    #[error("guest memory of {0} MiB is too small (at least 64 MiB)")]
    TooSmall(u64),
}

/// The RAM ranges (guest address, length) for `mem_size` bytes of guest memory.
pub fn ram_ranges(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (mem_size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Creates `mem_mib` MiB of guest RAM, backed by one memfd (each range at its own offset of the file).
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if mem_mib < 64 {
        return Err(MemoryError::TooSmall(mem_mib));
    }
    let size = mem_mib << 20;
    let file = memfd("boxyard-guest-ram", size).map_err(MemoryError::Memfd)?;
    let mut offset = 0u64;
    let mut ranges = Vec::new();
    for (addr, len) in ram_ranges(size) {
        let fo = FileOffset::new(file.try_clone().map_err(MemoryError::Memfd)?, offset);
        ranges.push((addr, len, Some(fo)));
        offset += len as u64;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(ranges)?;
    for r in mem.iter() {
        // Transparent huge pages where the host allows them for shared memory (`shmem_enabled` = advise), as QEMU
        // asks for its guest RAM: one 2 MiB page (and one nested-paging entry) instead of 512. Advice only: an
        // error (no THP in this kernel) changes nothing.
        // SAFETY: madvise on a live mapping of exactly this region; MADV_HUGEPAGE does not change its contents.
        unsafe { libc::madvise(r.as_ptr().cast(), r.len() as usize, libc::MADV_HUGEPAGE) };
    }
    Ok(mem)
}

/// Copies `len` bytes of `src`, from byte `src_offset` on, into guest memory at `addr`.
///
/// Guest RAM is a memfd, so the bytes go in through the file with sendfile(2): the kernel copies them from the page
/// cache of `src` into new memfd pages, without zeroing those pages first, without a page fault per 4 KiB page in
/// the VMM, and without a bounce buffer (reading into the mapping instead faults in, zeroes and then overwrites every
/// page; on these machines that is ~30% more CPU for the 14 MB kernel). The VMM's own mapping sees the same pages
/// (it is a shared mapping of the memfd). Regions without a backing file are filled by reading into the mapping.
pub fn load_from_file(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    src: &File,
    src_offset: u64,
    len: usize,
) -> std::io::Result<()> {
    let out_of_ram = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "does not fit in guest RAM");
    let region = mem.find_region(addr).ok_or_else(out_of_ram)?;
    let start = addr.unchecked_offset_from(region.start_addr());
    if start.checked_add(len as u64).is_none_or(|end| end > region.len()) {
        return Err(out_of_ram());
    }
    let Some(fo) = region.file_offset() else {
        return read_into_mapping(mem, addr, src, src_offset, len);
    };
    let out = fo.file();
    let mut in_off = libc::off_t::try_from(src_offset).map_err(|_| out_of_ram())?;
    let mut out_off = fo.start() + start;
    let mut left = len;
    while left > 0 {
        // sendfile(2) writes at the output's file position, which every duplicate of the memfd shares: set it
        // before each call (this runs while the VM is built, before any other thread touches the memfd).
        let pos = libc::off_t::try_from(out_off).map_err(|_| out_of_ram())?;
        // SAFETY: lseek on a descriptor we own.
        if unsafe { libc::lseek(out.as_raw_fd(), pos, libc::SEEK_SET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors are open for the call; in_off is a valid out-pointer.
        let n = unsafe { libc::sendfile(out.as_raw_fd(), src.as_raw_fd(), &mut in_off, left) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than expected"));
        }
        left -= n as usize;
        out_off += n as u64;
    }
    Ok(())
}

fn read_into_mapping(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    src: &File,
    src_offset: u64,
    len: usize,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = src.try_clone()?;
    f.seek(SeekFrom::Start(src_offset))?;
    mem.read_exact_volatile_from(addr, &mut f, len).map_err(std::io::Error::other)
}

/// An anonymous memory file of `size` bytes.
fn memfd(name: &str, size: u64) -> std::io::Result<File> {
    let cname = std::ffi::CString::new(name).expect("no NUL in a constant name");
    // SAFETY: a valid NUL-terminated name; the returned descriptor is checked and owned by the File.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_memory_is_one_range_below_the_gap() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn large_memory_is_split_around_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1], (GuestAddress(MMIO_GAP_END), ((4 << 30) - MMIO_GAP_START) as usize));
    }

    #[test]
    fn files_load_through_the_memfd_and_read_back_through_the_mapping() {
        let mem = create_guest_memory(64).unwrap();
        let data: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i * 7 % 251) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        let file = File::open(f.path()).unwrap();
        // Unaligned destination, a source offset, and a page the VMM already touched through the mapping.
        mem.write_obj(0xffu8, GuestAddress(0x10_0000)).unwrap();
        load_from_file(&mem, GuestAddress(0x10_0011), &file, 5, data.len() - 5).unwrap();
        let mut back = vec![0u8; data.len() - 5];
        mem.read_slice(&mut back, GuestAddress(0x10_0011)).unwrap();
        assert_eq!(back, data[5..]);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(), 0xff, "bytes before are kept");
        assert!(load_from_file(&mem, GuestAddress((64 << 20) - 100), &file, 0, 200).is_err(), "past the end");
        assert!(load_from_file(&mem, GuestAddress(0), &file, 0, data.len() + 1).is_err(), "past the file's end");
    }

    #[test]
    fn memfd_memory_reads_back_what_was_written() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert!(mem.write_obj(1u8, GuestAddress(64 << 20)).is_err(), "past the end of RAM");
        assert!(matches!(create_guest_memory(16), Err(MemoryError::TooSmall(16))));
    }
}
