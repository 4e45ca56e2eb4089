//! The ACPI tables that describe the machine to the guest: the Debian kernel has no MP-table parser and no
//! `virtio_mmio.device=` command-line devices, so CPUs, the serial port and the virtio-mmio devices are all
//! announced here. The platform is hardware-reduced ACPI (no PM timer, no fixed-feature hardware, no PIC in use);
//! power-off goes through the FADT sleep control register, reset through the FADT reset register, both handled by
//! [`crate::devices::legacy::AcpiPower`].
//!
//! The host's graceful stop is an ACPI power button: `\_SB.PWRB` (PNP0C0C) notified by a Generic Event Device
//! (`\_SB.GED0`, ACPI0013) whose interrupt the VMM raises; the kernel's button driver turns the notification into
//! `KEY_POWER`, which the guest agent answers with a clean power-off.
//!
//! Layout, from [`ACPI_ADDR`]: RSDP, XSDT, FADT, MADT, DSDT. Table structures come from the `acpi_tables` crate; the
//! DSDT is encoded with its AML builder.

use acpi_tables::Aml;
use acpi_tables::aml::{self, EISAName, Interrupt, Memory32Fixed, Name, Path, ResourceTemplate};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::legacy::{ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_STATUS_PORT};
use crate::memory::{ACPI_ADDR, ACPI_SIZE, IOAPIC_ADDR, LAPIC_ADDR};

const OEM_ID: [u8; 6] = *b"BOXYRD";
const OEM_TABLE_ID: [u8; 8] = *b"BOXYVMM ";
const OEM_REVISION: u32 = 1;
/// The sleep type value the DSDT's `_S5` object gives for soft-off (the power device owns it).
pub use crate::devices::legacy::S5_SLEEP_TYPE;

/// Errors writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit their reserved area.
    #[error("ACPI tables take {0} bytes, more than the {ACPI_SIZE} reserved")]
    TooLarge(u64),
    /// Writing guest memory failed.
    #[error("writing ACPI tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// A virtio-mmio device as the DSDT announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Base of its register window.
    pub base: u64,
    /// Size of the window.
    pub size: u64,
    /// Its GSI (edge-triggered, active high).
    pub gsi: u32,
}

/// The serial port as the DSDT announces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialInfo {
    /// First I/O port (8 ports).
    pub port: u16,
    /// Its ISA IRQ.
    pub irq: u32,
}

/// Everything the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// vCPU count (APIC IDs 0..n).
    pub vcpus: u8,
    /// The serial console.
    pub serial: SerialInfo,
    /// The virtio-mmio devices.
    pub virtio: Vec<MmioDeviceInfo>,
    /// GSI of the Generic Event Device that delivers the power button, if any.
    pub ged_gsi: Option<u32>,
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The DSDT: `\_SB.COM1` (PNP0501), one `\_SB.VRnn` (LNRO0005) per virtio-mmio device, and `\_S5`.
pub fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    let com_io = aml::IO::new(cfg.serial.port, cfg.serial.port, 1, 8);
    let com_irq = Interrupt::new(true, true, false, false, cfg.serial.irq);
    let com_crs = ResourceTemplate::new(vec![&com_io, &com_irq]);
    let com_hid = EISAName::new("PNP0501");
    let com_hid_name = Name::new(Path::new("_HID"), &com_hid);
    let com_uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let com_crs_name = Name::new(Path::new("_CRS"), &com_crs);
    let com1 = aml::Device::new(Path::new("COM1"), vec![&com_hid_name, &com_uid, &com_crs_name]);

    struct VirtioAml {
        mem: Memory32Fixed,
        irq: Interrupt,
        uid: u32,
    }
    let parts: Vec<VirtioAml> = cfg
        .virtio
        .iter()
        .enumerate()
        .map(|(i, d)| VirtioAml {
            mem: Memory32Fixed::new(true, d.base as u32, d.size as u32),
            irq: Interrupt::new(true, true, false, false, d.gsi),
            uid: i as u32,
        })
        .collect();
    let crs: Vec<ResourceTemplate> = parts.iter().map(|p| ResourceTemplate::new(vec![&p.mem, &p.irq])).collect();
    let crs_names: Vec<Name> = crs.iter().map(|c| Name::new(Path::new("_CRS"), c)).collect();
    let hid: &'static str = "LNRO0005";
    let hid_name = Name::new(Path::new("_HID"), &hid);
    let uid_names: Vec<Name> = parts.iter().map(|p| Name::new(Path::new("_UID"), &p.uid)).collect();
    let devices: Vec<aml::Device> = (0..parts.len())
        .map(|i| aml::Device::new(Path::new(&format!("VR{i:02X}")), vec![&hid_name, &uid_names[i], &crs_names[i]]))
        .collect();
    let mut sb_children: Vec<&dyn Aml> = vec![&com1];
    sb_children.extend(devices.iter().map(|d| d as &dyn Aml));

    let pwrb_hid = EISAName::new("PNP0C0C");
    let pwrb_hid_name = Name::new(Path::new("_HID"), &pwrb_hid);
    let pwrb = aml::Device::new(Path::new("PWRB"), vec![&pwrb_hid_name, &com_uid]);
    let ged_hid: &'static str = "ACPI0013";
    let ged_hid_name = Name::new(Path::new("_HID"), &ged_hid);
    let ged_irq = Interrupt::new(true, true, false, false, cfg.ged_gsi.unwrap_or(0));
    let ged_crs = ResourceTemplate::new(vec![&ged_irq]);
    let ged_crs_name = Name::new(Path::new("_CRS"), &ged_crs);
    let pwrb_path = Path::new("\\_SB_.PWRB");
    let notify_value: u8 = 0x80;
    let notify = aml::Notify::new(&pwrb_path, &notify_value);
    // The only event this GED delivers is the power button, so `_EVT` does not need to look at its argument.
    let evt = aml::Method::new(Path::new("_EVT"), 1, true, vec![&notify]);
    let ged = aml::Device::new(Path::new("GED0"), vec![&ged_hid_name, &com_uid, &ged_crs_name, &evt]);
    if cfg.ged_gsi.is_some() {
        sb_children.push(&pwrb);
        sb_children.push(&ged);
    }
    let sb = aml::Scope::new(Path::new("\\_SB_"), sb_children);
    sb.to_aml_bytes(&mut body);
    let s5 = aml::Package::new(vec![&S5_SLEEP_TYPE, &aml::ZERO]);
    Name::new(Path::new("_S5_"), &s5).to_aml_bytes(&mut body);

    let mut table = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.append_slice(&body);
    table.as_slice().to_vec()
}

/// The hardware-reduced FADT pointing at the DSDT, with the sleep and reset registers.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::Headless);
    let port = |p: u16| GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(p));
    b.sleep_control_reg = port(ACPI_SLEEP_CONTROL_PORT);
    b.sleep_status_reg = port(ACPI_SLEEP_STATUS_PORT);
    b.reset_reg = port(ACPI_RESET_PORT);
    b.reset_value = ACPI_RESET_VALUE;
    // "Hypervisor vendor identity" is informational; leave it zero.
    bytes(&b.finalize())
}

/// The MADT: one enabled local APIC per vCPU, the IOAPIC (ID after the last CPU) with GSIs from 0.
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = MADT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION, LocalInterruptController::Address(LAPIC_ADDR));
    for i in 0..vcpus {
        m.add_structure(ProcessorLocalApic::new(i, i, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(vcpus, IOAPIC_ADDR, 0));
    bytes(&m)
}

/// Every table with its guest address, RSDP first.
pub fn tables(cfg: &AcpiConfig) -> Vec<(u64, Vec<u8>)> {
    let align = |a: u64| (a + 15) & !15;
    let rsdp_addr = ACPI_ADDR;
    let xsdt_addr = align(rsdp_addr + Rsdp::len() as u64);
    // XSDT: header + 2 entries (FADT, MADT).
    let fadt_addr = align(xsdt_addr + 36 + 2 * 8);
    let fadt_len = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION).finalize();
    let madt_addr = align(fadt_addr + bytes(&fadt_len).len() as u64);
    let madt = madt(cfg.vcpus);
    let dsdt_addr = align(madt_addr + madt.len() as u64);
    let dsdt = dsdt(cfg);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    vec![
        (rsdp_addr, bytes(&Rsdp::new(OEM_ID, xsdt_addr))),
        (xsdt_addr, bytes(&xsdt)),
        (fadt_addr, fadt(dsdt_addr)),
        (madt_addr, madt),
        (dsdt_addr, dsdt),
    ]
}

/// Writes all tables into guest memory; returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, cfg: &AcpiConfig) -> Result<GuestAddress, AcpiError> {
    let all = tables(cfg);
    let end = all.last().map(|(a, t)| a + t.len() as u64).unwrap_or(ACPI_ADDR);
    if end - ACPI_ADDR > ACPI_SIZE {
        return Err(AcpiError::TooLarge(end - ACPI_ADDR));
    }
    for (addr, t) in &all {
        mem.write_slice(t, GuestAddress(*addr))?;
    }
    Ok(GuestAddress(ACPI_ADDR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vcpus: u8, devices: usize) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            serial: SerialInfo { port: 0x3f8, irq: 4 },
            virtio: (0..devices)
                .map(|i| MmioDeviceInfo { base: 0xd000_0000 + 0x1000 * i as u64, size: 0x1000, gsi: 5 + i as u32 })
                .collect(),
            ged_gsi: Some(22),
        }
    }

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    #[test]
    fn every_table_checksums_to_zero_and_states_its_length() {
        for vcpus in [1, 2, 4] {
            for (addr, t) in tables(&cfg(vcpus, 4)) {
                if addr == ACPI_ADDR {
                    assert_eq!(&t[..8], b"RSD PTR ");
                    assert_eq!(sum(&t[..20]), 0, "RSDP v1 checksum");
                    assert_eq!(sum(&t), 0, "RSDP extended checksum");
                    assert_eq!(u32_at(&t, 20) as usize, t.len());
                } else {
                    assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(&t[..4]));
                    assert_eq!(u32_at(&t, 4) as usize, t.len(), "{} length", String::from_utf8_lossy(&t[..4]));
                }
            }
        }
    }

    #[test]
    fn pointers_link_rsdp_to_xsdt_to_fadt_madt_and_dsdt() {
        let all = tables(&cfg(2, 3));
        let find = |addr: u64| &all.iter().find(|(a, _)| *a == addr).expect("pointer to a table").1;
        let rsdp = &all[0].1;
        let xsdt = find(u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        let fadt = find(u64_at(xsdt, 36));
        let madt = find(u64_at(xsdt, 44));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(&madt[..4], b"APIC");
        // FADT: X_DSDT at offset 140, flags at 112 with HW_REDUCED_ACPI (bit 20).
        assert_eq!(&find(u64_at(fadt, 140))[..4], b"DSDT");
        assert_ne!(u32_at(fadt, 112) & (1 << 20), 0);
        // Sleep control register: a GAS in system I/O space at offset 244.
        assert_eq!(fadt[244], 1);
        assert_eq!(u64_at(fadt, 248), u64::from(ACPI_SLEEP_CONTROL_PORT));
    }

    #[test]
    fn madt_lists_one_enabled_lapic_per_vcpu_and_the_ioapic() {
        let m = madt(4);
        assert_eq!(u32_at(&m, 36), LAPIC_ADDR);
        let mut off = 44;
        let mut lapics = vec![];
        let mut ioapic = None;
        while off < m.len() {
            let (kind, len) = (m[off], m[off + 1] as usize);
            match kind {
                0 => lapics.push((m[off + 2], m[off + 3], u32_at(&m, off + 4))),
                1 => ioapic = Some((m[off + 2], u32_at(&m, off + 4), u32_at(&m, off + 8))),
                k => panic!("unexpected MADT entry type {k}"),
            }
            off += len;
        }
        assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
        assert_eq!(ioapic, Some((4, IOAPIC_ADDR, 0)));
    }

    #[test]
    fn dsdt_names_the_virtio_devices_and_serial_port() {
        let d = dsdt(&cfg(1, 3));
        let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"LNRO0005\0"));
        assert!(has(b"VR00") && has(b"VR01") && has(b"VR02") && !has(b"VR03"));
        assert!(has(b"COM1") && has(b"_S5_"));
        assert!(has(b"ACPI0013\0") && has(b"GED0") && has(b"PWRB") && has(b"_EVT"));
        let without = dsdt(&AcpiConfig { ged_gsi: None, ..cfg(1, 3) });
        assert!(!without.windows(4).any(|w| w == b"GED0"));
        // The third device's window base, little-endian, inside a Memory32Fixed descriptor (0x86).
        assert!(has(&[0x86, 9, 0, 1, 0x00, 0x20, 0x00, 0xd0]));
    }

    #[test]
    fn tables_fit_their_area_with_many_cpus_and_devices() {
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let rsdp = write_tables(&mem, &cfg(32, 16)).unwrap();
        let sig: [u8; 8] = mem.read_obj(rsdp).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }

    /// `iasl -d` (Debian's acpica-tools) must disassemble the DSDT without errors.
    #[test]
    fn dsdt_disassembles_with_iasl() {
        let out = std::process::Command::new("iasl")
            .arg("-v")
            .output()
            .expect("iasl is not installed: apt-get install acpica-tools (scripts/setup.sh does)");
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsdt.aml");
        std::fs::write(&path, dsdt(&cfg(2, 4))).unwrap();
        let out = std::process::Command::new("iasl").arg("-d").arg(&path).current_dir(dir.path()).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "iasl -d failed:\n{text}");
        assert!(!text.contains("Error") || text.contains("0 Errors"), "{text}");
        let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).unwrap();
        assert!(dsl.contains("\"LNRO0005\""), "{dsl}");
        assert!(dsl.contains("Device (VR03)"), "{dsl}");
        assert!(dsl.contains("EisaId (\"PNP0501\")"), "{dsl}");
        assert!(dsl.contains("Name (_S5"), "{dsl}");
        assert!(dsl.contains("\"ACPI0013\""), "{dsl}");
        assert!(dsl.contains("EisaId (\"PNP0C0C\")"), "{dsl}");
        assert!(dsl.contains("Notify (\\_SB.PWRB, 0x80)"), "{dsl}");
    }
}
