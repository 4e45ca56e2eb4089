//! Loading a Linux bzImage and its initramfs, and writing what the 64-bit boot protocol expects to find: the zero
//! page (`boot_params` with the setup header, command line, initramfs and e820 map), an identity-mapped page table
//! for the first GiB and a flat GDT. The vCPU registers that point at these are set in [`super::cpu`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::load_cmdline;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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
/// Where the setup header sits in a bzImage (the boot protocol's fixed offset).
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// `loadflags` bit: the protected-mode kernel is loaded at 1 MiB (a bzImage).
const LOADED_HIGH: u8 = 0x1;
/// `xloadflags` bit: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 0x1;

/// Errors loading the kernel and writing boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A boot file could not be opened or read.
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    /// The kernel is not a loadable bzImage.
    #[error("the kernel is not a 64-bit bzImage: {0}")]
    NotBzImage(&'static str),
    /// The kernel does not fit in guest memory at 1 MiB.
    #[error("the kernel ({0} bytes) does not fit in guest memory")]
    KernelTooLarge(u64),
    /// The command line could not be written to guest memory.
    #[error("writing the kernel command line: {0}")]
    LoadCmdline(#[from] linux_loader::loader::Error),
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
    let open = |p: &Path| File::open(p).map_err(file_err(p));
    let kfile = open(kernel)?;
    let (hdr, kernel_end) = load_bzimage(mem, &kfile).map_err(|e| match e {
        LoadError::Io(e) => BootError::File(kernel.display().to_string(), e),
        LoadError::Boot(e) => e,
    })?;
    crate::timing::mark("kernel load");
    let mut params = boot_params { hdr, ..Default::default() };
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
        let f = open(path)?;
        let size = f.metadata().map_err(file_err(path))?.len();
        let limit = low_ram_end(mem).min(u64::from(params.hdr.initrd_addr_max) + 1);
        let addr = limit
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|a| *a >= kernel_end)
            .ok_or(BootError::InitramfsTooLarge(size))?;
        load_from_file(mem, GuestAddress(addr), &f, 0, size as usize).map_err(file_err(path))?;
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
    Ok(BootInfo { entry: GuestAddress(HIMEM_START + ENTRY_64_OFFSET) })
}

fn file_err(p: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |e| BootError::File(p.display().to_string(), e)
}

enum LoadError {
    Io(std::io::Error),
    Boot(BootError),
}

/// Checks the bzImage's setup header (boot protocol 2.12+ with the 64-bit entry) and copies the protected-mode
/// kernel, everything after the real-mode setup sectors, to [`HIMEM_START`]. Returns the header (with
/// `code32_start` set to where the kernel went) and the end of the kernel in guest memory.
fn load_bzimage(mem: &GuestMemoryMmap, kfile: &File) -> Result<(setup_header, u64), LoadError> {
    let bad = |why| LoadError::Boot(BootError::NotBzImage(why));
    let file_size = kfile.metadata().map_err(LoadError::Io)?.len();
    let mut hdr = setup_header::default();
    match kfile.read_exact_at(hdr.as_mut_slice(), SETUP_HEADER_OFFSET) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(bad("shorter than a setup header")),
        Err(e) => return Err(LoadError::Io(e)),
    }
    if hdr.header != HDRS_MAGIC {
        return Err(bad("no HdrS magic"));
    }
    if hdr.version < 0x020c || hdr.loadflags & LOADED_HIGH == 0 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(bad("boot protocol before 2.12, not loaded high, or no 64-bit entry"));
    }
    let setup_sects = if hdr.setup_sects == 0 { 4 } else { u64::from(hdr.setup_sects) };
    let setup_size = (setup_sects + 1) * 512;
    let kernel_size = file_size.checked_sub(setup_size).filter(|n| *n > 0).ok_or(bad("no protected-mode kernel"))?;
    let kernel_end = HIMEM_START + kernel_size;
    if kernel_end > low_ram_end(mem) {
        return Err(LoadError::Boot(BootError::KernelTooLarge(kernel_size)));
    }
    load_from_file(mem, GuestAddress(HIMEM_START), kfile, setup_size, kernel_size as usize).map_err(LoadError::Io)?;
    hdr.code32_start = HIMEM_START as u32;
    Ok((hdr, kernel_end))
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

    /// A minimal bzImage: one setup sector after the boot sector, then `payload` as the protected-mode kernel.
    fn fake_bzimage(payload: &[u8], version: u16) -> tempfile::NamedTempFile {
        let mut hdr =
            setup_header { setup_sects: 1, header: HDRS_MAGIC, version, loadflags: LOADED_HIGH, ..Default::default() };
        hdr.xloadflags = XLF_KERNEL_64;
        hdr.initrd_addr_max = 0x7fff_ffff;
        let mut img = vec![0u8; 1024];
        img[SETUP_HEADER_OFFSET as usize..][..std::mem::size_of::<setup_header>()].copy_from_slice(hdr.as_slice());
        img.extend_from_slice(payload);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), img).unwrap();
        f
    }

    #[test]
    fn the_protected_mode_kernel_lands_at_1_mib_and_the_initramfs_below_the_top() {
        let mem = create_guest_memory(64).unwrap();
        let payload: Vec<u8> = (0..10_000).map(|i| (i % 253) as u8).collect();
        let k = fake_bzimage(&payload, 0x020f);
        let initrd = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(initrd.path(), [7u8; 5000]).unwrap();
        let info = load_linux(&mem, k.path(), Some(initrd.path()), "console=ttyS0").unwrap();
        assert_eq!(info.entry, GuestAddress(HIMEM_START + ENTRY_64_OFFSET));
        let mut back = vec![0u8; payload.len()];
        mem.read_slice(&mut back, GuestAddress(HIMEM_START)).unwrap();
        assert_eq!(back, payload);
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let (addr, size) = (params.hdr.ramdisk_image, params.hdr.ramdisk_size);
        assert_eq!(size, 5000);
        assert_eq!(u64::from(addr) % 4096, 0);
        assert!(u64::from(addr) + 5000 <= 64 << 20);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(u64::from(addr) + 4999)).unwrap(), 7);
        let code32_start = params.hdr.code32_start;
        assert_eq!(u64::from(code32_start), HIMEM_START);
        // Too old a boot protocol (no 64-bit entry guaranteed) is refused.
        let old = fake_bzimage(&payload, 0x0206);
        assert!(matches!(load_linux(&mem, old.path(), None, ""), Err(BootError::NotBzImage(_))));
    }

    #[test]
    fn a_file_that_is_not_a_bzimage_is_rejected() {
        let mem = create_guest_memory(64).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0u8; 8192]).unwrap();
        assert!(matches!(load_linux(&mem, f.path(), None, "console=ttyS0"), Err(BootError::NotBzImage(_))));
        std::fs::write(f.path(), [0u8; 16]).unwrap();
        assert!(matches!(load_linux(&mem, f.path(), None, "console=ttyS0"), Err(BootError::NotBzImage(_))));
    }
}
