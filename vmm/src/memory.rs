//! The guest physical address map and guest RAM.
//!
//! RAM is one anonymous memfd mapped shared, so a later snapshot can hand the same pages to another process. RAM
//! below 4 GiB stops at [`MMIO_GAP_START`]; the rest continues at 4 GiB. The fixed addresses of the boot structures
//! (zero page, command line, page tables, GDT), the ACPI tables and the device windows are all defined here, in one
//! place, so the boot code, the ACPI tables and the device setup cannot disagree.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

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
    Ok(GuestMemoryMmap::from_ranges_with_files(ranges)?)
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
    fn memfd_memory_reads_back_what_was_written() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert!(mem.write_obj(1u8, GuestAddress(64 << 20)).is_err(), "past the end of RAM");
        assert!(matches!(create_guest_memory(16), Err(MemoryError::TooSmall(16))));
    }
}
