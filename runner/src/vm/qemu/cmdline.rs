//! The QEMU command line for a box VM.
//!
//! Kept a pure function of the spec so it can be tested without QEMU and read in one place.

use super::super::VmSpec;
use boxyard_proto::AGENT_PORT_NAME;

/// CPU acceleration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// QEMU machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `microvm` with ACPI (virtio-mmio devices described in ACPI tables): the smallest machine.
    Microvm,
    /// `q35` with virtio-pci devices.
    Q35,
}

impl Machine {
    /// `microvm` or `q35`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "microvm" => Some(Machine::Microvm),
            "q35" => Some(Machine::Q35),
            _ => None,
        }
    }
}

/// Kernel command line shared by every box. `quiet` matters: serial output is slow under emulation.
pub const BASE_KERNEL_ARGS: &[&str] = &[
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "reboot=t",
    "tsc=reliable",
    "no_timer_check",
    "mitigations=off",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.nopnp",
    "i8042.dumbkbd",
    "random.trust_cpu=on",
];

/// Builds the arguments (without the program name).
///
/// `tsc_khz`: under TCG on microvm, the host TSC rate for `tsc_early_khz=` (microvm has no HPET or PM timer to
/// calibrate against, and a failed calibration can hang the guest's boot on a busy host).
pub fn args(spec: &VmSpec, accel: Accel, machine: Machine, tsc_khz: Option<u64>) -> Vec<String> {
    let files = spec.paths();
    let (machine_arg, blk, serial_bus) = match machine {
        Machine::Microvm => ("microvm,acpi=on", "virtio-blk-device", "virtio-serial-device"),
        Machine::Q35 => ("q35", "virtio-blk-pci", "virtio-serial-pci"),
    };
    let mut kernel_args: Vec<String> = BASE_KERNEL_ARGS.iter().map(|s| s.to_string()).collect();
    if machine == Machine::Microvm {
        kernel_args.push("pci=off".into());
        if let (Accel::Tcg, Some(khz)) = (accel, tsc_khz) {
            kernel_args.push(format!("tsc_early_khz={khz}"));
        }
    }
    kernel_args.extend(spec.extra_kernel_args.iter().cloned());

    let mut a: Vec<String> = vec![
        "-name".into(),
        format!("boxyard-{},process=boxyard-vm-{}", spec.id, spec.id),
        "-machine".into(),
        machine_arg.into(),
        "-accel".into(),
        match accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg".into(),
        },
        "-cpu".into(),
        match accel {
            Accel::Kvm => "host".into(),
            Accel::Tcg => "max".into(),
        },
        "-smp".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        spec.kernel.display().to_string(),
        "-initrd".into(),
        spec.initramfs.display().to_string(),
        "-append".into(),
        kernel_args.join(" "),
        "-chardev".into(),
        format!("file,id=console,path={}", spec.console_log().display()),
        "-serial".into(),
        "chardev:console".into(),
        "-drive".into(),
        format!("if=none,id=root,format=raw,readonly=on,file={}", spec.root_image.display()),
        "-device".into(),
        format!("{blk},drive=root,serial=boxyard-root"),
    ];
    if let Some(disk) = &spec.writable_disk {
        a.extend([
            "-drive".into(),
            format!("if=none,id=rw,format=raw,cache=writeback,discard=unmap,file={}", disk.display()),
            "-device".into(),
            format!("{blk},drive=rw,serial=boxyard-rw"),
        ]);
    }
    a.extend([
        "-device".into(),
        serial_bus.into(),
        "-chardev".into(),
        format!("socket,id=agent,path={},server=on,wait=off", spec.agent_socket().display()),
        "-device".into(),
        format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", files.qmp_socket().display()),
        "-pidfile".into(),
        files.qemu_pid().display().to_string(),
    ]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec() -> VmSpec {
        VmSpec {
            id: "b1".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            root_image: "/r.ext4".into(),
            writable_disk: Some("/w.ext4".into()),
            vcpus: 2,
            memory_mib: 512,
            run_dir: PathBuf::from("/run/b1"),
            extra_kernel_args: vec!["boxyard.debug".into()],
        }
    }

    #[test]
    fn microvm_tcg_line() {
        let a = args(&spec(), Accel::Tcg, Machine::Microvm, Some(2_500_000)).join(" ");
        assert!(a.contains("-machine microvm,acpi=on"));
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("virtio-blk-device,drive=root,serial=boxyard-root"));
        assert!(a.contains("virtio-blk-device,drive=rw,serial=boxyard-rw"));
        assert!(a.contains("socket,id=agent,path=/run/b1/agent.sock,server=on,wait=off"));
        assert!(a.contains("name=boxyard.agent"));
        assert!(a.contains("pci=off tsc_early_khz=2500000 boxyard.debug"));
        assert!(a.contains("-smp 2 -m 512M"));
    }

    #[test]
    fn q35_kvm_line_without_writable_disk() {
        let mut s = spec();
        s.writable_disk = None;
        let a = args(&s, Accel::Kvm, Machine::Q35, Some(2_500_000)).join(" ");
        assert!(a.contains("-accel kvm -cpu host"));
        assert!(a.contains("virtio-blk-pci,drive=root"));
        assert!(!a.contains("boxyard-rw"));
        assert!(!a.contains("pci=off"));
        assert!(!a.contains("tsc_early_khz"));
    }
}
