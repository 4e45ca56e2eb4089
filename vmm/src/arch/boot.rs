//! Loading a Linux bzImage and its initramfs, and writing what the 64-bit boot protocol expects to find: the zero
//! page (`boot_params` with the setup header, command line, initramfs and e820 map), an identity-mapped page table
//! for the first GiB and a flat GDT. The vCPU registers that point at these are set in [`super::cpu`].

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{KernelLoader, bzimage::BzImage, load_cmdline};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::memory::*;

/// e820 entry type: usable RAM.
const E820_RAM: u32 = 1;
/// e820 entry type: reserved.
const E820_RESERVED: u32 = 2;
/// `boot_params.hdr.type_of_loader`: "undefined" loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Setup header magic "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Offset of the 64-bit entry point from the start of the protected-mode kernel.
const ENTRY_64_OFFSET: u64 = 0x200;

/// Errors loading the kernel and writing boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A boot file could not be opened or read.
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    /// The kernel is not a loadable bzImage.
    #[error("loading the kernel: {0}")]
    Kernel(#[from] linux_loader::loader::Error),
    /// The command line is invalid or too long.
    #[error("kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    /// The initramfs does not fit below the kernel's limit.
    #[error("the initramfs ({0} bytes) does not fit in guest memory")]
    InitramfsTooLarge(u64),
    /// Writing into guest memory failed.
    #[error("writing boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// Where the kernel landed and where the vCPU enters it.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// The 64-bit entry point (`startup_64`).
    pub entry: GuestAddress,
}

/// Loads `kernel` (bzImage) and `initramfs`, writes the command line, zero page, page tables and GDT.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    kernel: &Path,
    initramfs: Option<&Path>,
    cmdline: &str,
) -> Result<BootInfo, BootError> {
    let open = |p: &Path| File::open(p).map_err(|e| BootError::File(p.display().to_string(), e));
    let mut kfile = open(kernel)?;
    let loaded = BzImage::load(mem, None, &mut kfile, Some(GuestAddress(HIMEM_START)))?;
    crate::timing::mark("kernel load");
    let mut params = boot_params::default();
    if let Some(hdr) = loaded.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.kernel_alignment = 0x0100_0000;
    // CAN_USE_HEAP; the heap end is meaningless for a 64-bit entry but keeps old kernels quiet.
    params.hdr.loadflags |= 0x80;
    params.hdr.heap_end_ptr = 0xfe00;

    let mut cl = Cmdline::new(CMDLINE_MAX_SIZE)?;
    cl.insert_str(cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cl)?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;

    if let Some(path) = initramfs {
        let mut f = open(path)?;
        let size = f.metadata().map_err(|e| BootError::File(path.display().to_string(), e))?.len();
        let limit = low_ram_end(mem).min(u64::from(params.hdr.initrd_addr_max) + 1);
        let addr = limit
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= loaded.kernel_end)
            .ok_or(BootError::InitramfsTooLarge(size))?;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        crate::timing::mark("initramfs load");
    }

    params.acpi_rsdp_addr = ACPI_ADDR;
    let entries = e820_map(mem);
    for (i, (addr, size, kind)) in entries.iter().enumerate() {
        params.e820_table[i].addr = *addr;
        params.e820_table[i].size = *size;
        params.e820_table[i].r#type = *kind;
    }
    params.e820_entries = entries.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))?;

    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(BootInfo { entry: loaded.kernel_load.unchecked_add(ENTRY_64_OFFSET) })
}

/// End of the RAM region that starts at 0 (where the initramfs goes: the kernel wants it below 4 GiB).
fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().find(|r| r.start_addr() == GuestAddress(0)).map(|r| r.len()).unwrap_or(0)
}

/// The e820 map: low RAM below the EBDA, the BIOS area (where the ACPI tables are) reserved, RAM from 1 MiB.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u32)> {
    let mut map = vec![(0, EBDA_START, E820_RAM), (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED)];
    for r in mem.iter() {
        let start = r.start_addr().raw_value();
        let end = start + r.len();
        let start = start.max(HIMEM_START);
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// 2 MiB identity pages for the first GiB: enough for the kernel's early code, which builds its own tables.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    // Present | writable.
    mem.write_obj(PDPTE_ADDR | 0x03, GuestAddress(PML4_ADDR))?;
    mem.write_obj(PDE_ADDR | 0x03, GuestAddress(PDPTE_ADDR))?;
    for i in 0..512u64 {
        // Present | writable | page size (2 MiB).
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_ADDR + i * 8))?;
    }
    Ok(())
}

/// The boot GDT: null, 64-bit code, data, TSS (the selectors in [`super::cpu`] index it).
pub const GDT: [u64; 4] =
    [0, gdt_entry(0xa09b, 0, 0xfffff), gdt_entry(0xc093, 0, 0xfffff), gdt_entry(0x808b, 0, 0xfffff)];

/// One GDT descriptor from flags (access byte and the flags nibble), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

fn write_gdt(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_encode_flat_64bit_segments() {
        // The well-known encodings of a flat 64-bit code segment and a flat data segment.
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn e820_reserves_the_bios_area_and_reports_all_ram() {
        let mem = create_guest_memory(128).unwrap();
        let map = e820_map(&mem);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(map[1].2, E820_RESERVED);
        assert!(map[1].0 <= ACPI_ADDR && ACPI_ADDR + ACPI_SIZE <= map[1].0 + map[1].1, "ACPI tables reserved");
        assert_eq!(map[2], (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM));
    }

    #[test]
    fn page_tables_identity_map_the_first_gib() {
        let mem = create_guest_memory(64).unwrap();
        write_page_tables(&mem).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(PML4_ADDR)).unwrap(), PDPTE_ADDR | 3);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(PDE_ADDR + 8 * 511)).unwrap(), (511 << 21) | 0x83);
    }

    #[test]
    fn a_file_that_is_not_a_bzimage_is_rejected() {
        let mem = create_guest_memory(64).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0u8; 8192]).unwrap();
        assert!(matches!(load_linux(&mem, f.path(), None, "console=ttyS0"), Err(BootError::Kernel(_))));
    }
}
