//! The state a vCPU starts in: CPUID (KVM's supported set, with this vCPU's APIC ID and topology), the boot MSRs,
//! the general and segment registers of the 64-bit entry (boot vCPU only: the others wait for INIT/SIPI in the
//! in-kernel LAPIC), the FPU control words and the LAPIC's LINT0/LINT1 wiring.

use kvm_bindings::{CpuId, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;

use super::boot::GDT;
use crate::memory::*;

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM vCPU ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// KVM accepted fewer MSRs than given.
    #[error("KVM set {0} of {1} boot MSRs")]
    Msrs(usize, usize),
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// CPUID leaf 1 ECX bit 24: the LAPIC timer has TSC-deadline mode.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Adds to KVM's supported CPUID what KVM emulates but reports through a capability instead of
/// `KVM_GET_SUPPORTED_CPUID`: the TSC-deadline LAPIC timer (`KVM_CAP_TSC_DEADLINE_TIMER`), as QEMU's `-cpu host`
/// does. With it the guest kernel arms its timer by writing one MSR and skips the LAPIC timer calibration (100 ms
/// of polling the timer against the TSC at boot).
pub fn add_emulated_features(cpuid: &mut CpuId, tsc_deadline: bool) {
    for e in cpuid.as_mut_slice() {
        if e.function == 1 && tsc_deadline {
            e.ecx |= CPUID_1_ECX_TSC_DEADLINE;
        }
    }
}

/// Patches KVM's supported CPUID for vCPU `index` of `count`: APIC IDs, logical processor count, hypervisor bit.
pub fn patch_cpuid(cpuid: &mut CpuId, index: u8, count: u8) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package; HTT when more than one.
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                if count > 1 {
                    e.edx |= 1 << 28;
                }
                // ECX[31]: running under a hypervisor.
                e.ecx |= 1 << 31;
            }
            0xb | 0x1f => {
                // x2APIC ID of this vCPU in EDX, every sub-leaf.
                e.edx = u32::from(index);
            }
            _ => {}
        }
    }
}

/// The MSRs a 64-bit kernel expects zeroed (and fast strings on), as on a freshly reset CPU.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index, data| kvm_msr_entry { index, data, ..Default::default() };
    vec![
        msr(MSR_IA32_SYSENTER_CS, 0),
        msr(MSR_IA32_SYSENTER_ESP, 0),
        msr(MSR_IA32_SYSENTER_EIP, 0),
        msr(MSR_STAR, 0),
        msr(MSR_CSTAR, 0),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSCALL_MASK, 0),
        msr(MSR_LSTAR, 0),
        msr(MSR_IA32_TSC, 0),
        msr(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// General registers of the 64-bit entry: RIP at the kernel, RSI at the zero page.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_ADDR,
        rbp: BOOT_STACK_ADDR,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    }
}

/// A segment register from GDT entry `index`.
fn segment(index: usize) -> kvm_segment {
    let e = GDT[index];
    let base = ((e >> 16) & 0x00ff_ffff) | ((e >> 32) & 0xff00_0000);
    let raw_limit = ((e & 0xffff) | ((e >> 32) & 0xf_0000)) as u32;
    let g = ((e >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit },
        selector: (index * 8) as u16,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Segment and control registers: long mode with paging on the boot page tables, flat segments from the boot GDT.
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(1);
    let data = segment(2);
    let tss = segment(3);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// FPU state after FNINIT, with the default SSE control word.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

/// LAPIC register offsets and delivery modes for LINT0 (ExtINT: the PIC) and LINT1 (NMI).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

fn set_delivery_mode(lapic: &mut kvm_bindings::kvm_lapic_state, reg: usize, mode: u32) {
    let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|b| *b as u8).collect();
    let v = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
    let v = (v & !0x700) | (mode << 8);
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        lapic.regs[reg + i] = *b as _;
    }
}

/// Sets up one vCPU: CPUID and MSRs for every vCPU, registers only for the boot vCPU (`entry` given).
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    supported_cpuid: &CpuId,
    index: u8,
    count: u8,
    entry: Option<u64>,
) -> Result<(), CpuError> {
    let mut cpuid = supported_cpuid.clone();
    patch_cpuid(&mut cpuid, index, count);
    vcpu.set_cpuid2(&cpuid).map_err(|e| CpuError::Kvm("KVM_SET_CPUID2", e))?;

    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).expect("a handful of MSRs fits a FAM struct");
    let n = vcpu.set_msrs(&msrs).map_err(|e| CpuError::Kvm("KVM_SET_MSRS", e))?;
    if n != entries.len() {
        return Err(CpuError::Msrs(n, entries.len()));
    }

    let mut lapic = vcpu.get_lapic().map_err(|e| CpuError::Kvm("KVM_GET_LAPIC", e))?;
    set_delivery_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_delivery_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(|e| CpuError::Kvm("KVM_SET_LAPIC", e))?;

    if let Some(entry) = entry {
        vcpu.set_fpu(&boot_fpu()).map_err(|e| CpuError::Kvm("KVM_SET_FPU", e))?;
        vcpu.set_regs(&boot_regs(entry)).map_err(|e| CpuError::Kvm("KVM_SET_REGS", e))?;
        let sregs = vcpu.get_sregs().map_err(|e| CpuError::Kvm("KVM_GET_SREGS", e))?;
        vcpu.set_sregs(&boot_sregs(sregs)).map_err(|e| CpuError::Kvm("KVM_SET_SREGS", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn cpuid_carries_the_apic_id_and_cpu_count() {
        let entries = [
            kvm_cpuid_entry2 { function: 1, ebx: 0xffff_0800, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, index: 1, edx: 7, ..Default::default() },
        ];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        patch_cpuid(&mut cpuid, 3, 4);
        let s = cpuid.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_eq!(s[0].ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(s[0].ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(s[1].edx, 3);
    }

    #[test]
    fn tsc_deadline_is_added_only_when_kvm_has_it() {
        let entries = [kvm_cpuid_entry2 { function: 1, ecx: 1, ..Default::default() }];
        let mut cpuid = CpuId::from_entries(&entries).unwrap();
        add_emulated_features(&mut cpuid, false);
        assert_eq!(cpuid.as_slice()[0].ecx, 1);
        add_emulated_features(&mut cpuid, true);
        assert_eq!(cpuid.as_slice()[0].ecx, 1 | CPUID_1_ECX_TSC_DEADLINE);
    }

    #[test]
    fn boot_segments_are_64bit_flat() {
        let cs = segment(1);
        assert_eq!((cs.l, cs.db, cs.present, cs.s, cs.type_), (1, 0, 1, 1, 0xb));
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(2);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
        let s = boot_sregs(kvm_sregs::default());
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.selector, 8);
    }

    #[test]
    fn lint_delivery_modes_are_written_in_place() {
        let mut lapic = kvm_bindings::kvm_lapic_state::default();
        lapic.regs[APIC_LVT0] = 0x10_u8 as _; // vector bits must be kept
        set_delivery_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(lapic.regs[APIC_LVT0] as u8, 0x10);
        assert_eq!(lapic.regs[APIC_LVT0 + 1] as u8, 0x07);
    }
}
