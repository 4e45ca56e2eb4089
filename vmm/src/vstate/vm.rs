//! The KVM VM: created from `/dev/kvm`, given the guest memory regions, the in-kernel irqchip (PIC, IOAPIC, LAPICs)
//! and PIT, and the TSS address Intel's KVM needs. Devices register their irqfds and ioeventfds on it.

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::memory::KVM_TSS_ADDR;

/// Errors setting up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// The host KVM lacks something the VMM needs.
    #[error("KVM lacks {0}")]
    Missing(&'static str),
}

/// An open KVM VM and what was read from KVM for its vCPUs.
pub struct Vm {
    /// The `/dev/kvm` handle.
    pub kvm: Kvm,
    /// The VM.
    pub fd: VmFd,
    /// KVM's supported CPUID plus the features KVM emulates but reports separately, the base of every vCPU's CPUID.
    pub supported_cpuid: kvm_bindings::CpuId,
}

impl Vm {
    /// Opens /dev/kvm, creates the VM, maps `mem` into it and creates the irqchip and PIT.
    pub fn new(mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(|e| VmError::Kvm("open /dev/kvm", e))?;
        for (cap, name) in [
            (kvm_ioctls::Cap::Irqchip, "an in-kernel irqchip"),
            (kvm_ioctls::Cap::Ioeventfd, "ioeventfd"),
            (kvm_ioctls::Cap::Irqfd, "irqfd"),
            (kvm_ioctls::Cap::UserMemory, "user memory"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::Missing(name));
            }
        }
        let fd = kvm.create_vm().map_err(|e| VmError::Kvm("KVM_CREATE_VM", e))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region.as_ptr() as u64;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host,
            };
            // SAFETY: the region is a live mapping of `memory_size` bytes that outlives the VM (the caller keeps
            // the GuestMemoryMmap for the process's lifetime).
            unsafe { fd.set_user_memory_region(r) }.map_err(|e| VmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        fd.set_tss_address(KVM_TSS_ADDR as usize).map_err(|e| VmError::Kvm("KVM_SET_TSS_ADDR", e))?;
        fd.create_irq_chip().map_err(|e| VmError::Kvm("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        fd.create_pit2(pit).map_err(|e| VmError::Kvm("KVM_CREATE_PIT2", e))?;
        let mut supported_cpuid =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| VmError::Kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        crate::arch::cpu::add_emulated_features(
            &mut supported_cpuid,
            kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer),
        );
        Ok(Self { kvm, fd, supported_cpuid })
    }
}
