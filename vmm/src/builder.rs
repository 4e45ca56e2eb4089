//! Assembles a VM from a [`VmConfig`] and runs it until it ends: guest memory, the KVM VM, the legacy devices on
//! the I/O bus, the virtio devices on the MMIO bus (each with its irqfd and one ioeventfd per queue), the ACPI
//! tables, the kernel, and the vCPU threads.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiConfig, MmioDeviceInfo, SerialInfo};
use crate::arch::{boot, cpu};
use crate::bus::{Bus, SharedDevice};
use crate::devices::legacy::{self, AcpiPower, I8042, Rtc, SerialDevice};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::{Block, Disk};
use crate::devices::virtio::console::Console;
use crate::devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::rng::Rng;
use crate::memory::{self, GED_GSI, VIRTIO_IRQ_BASE, VIRTIO_MAX_DEVICES, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE};
use crate::timing;
use crate::vstate::ExitSignal;
use crate::vstate::run_control::RunControl;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

/// The kernel arguments every boot gets unless the caller replaces them: console on the 8250, no PCI (every device
/// is virtio-mmio from the DSDT), and the same quiet, fast-boot settings as the QEMU backend.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check \
    mitigations=off pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";

/// One disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image.
    pub path: PathBuf,
    /// Refuse writes.
    pub read_only: bool,
    /// The virtio-blk serial (how the guest agent finds its disks).
    pub serial: String,
}

/// Where the serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// Appended to this file.
    File(PathBuf),
    /// The VMM's stdout.
    Stdout,
    /// Dropped.
    Null,
}

/// Everything a VM is made of.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// bzImage.
    pub kernel: PathBuf,
    /// initramfs (cpio, optionally compressed as the kernel accepts).
    pub initramfs: Option<PathBuf>,
    /// The full kernel command line.
    pub cmdline: String,
    /// vCPU count (1..=32).
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// virtio-blk disks, in order.
    pub disks: Vec<DiskConfig>,
    /// The agent channel's host socket (virtio-console port `boxyard.agent`), if any.
    pub agent_socket: Option<PathBuf>,
    /// The serial console.
    pub console: ConsoleOutput,
    /// Add a virtio-rng device.
    pub rng: bool,
}

/// Errors building or running the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// The KVM VM.
    #[error(transparent)]
    Vm(#[from] crate::vstate::vm::VmError),
    /// A KVM ioctl while wiring devices or vCPUs.
    #[error("{0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// vCPU state.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// Kernel loading.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// Device placement.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// Files, sockets, eventfds, threads.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |e| BuildError::Io(what.to_string(), e)
}

/// A VM whose vCPUs run; [`RunningVm::wait`] blocks until it ends.
pub struct RunningVm {
    exit: ExitSignal,
    power_button: EventFd,
    control: Arc<RunControl>,
    vcpus: u8,
    memory_mib: u64,
    // Kept alive for the VM's lifetime: memory mappings, device threads, the VM fd.
    _vm: Vm,
    _mem: vm_memory::GuestMemoryMmap,
    _mmio: Arc<Bus>,
}

impl RunningVm {
    /// Pause and resume of the vCPUs.
    pub fn run_control(&self) -> &RunControl {
        &self.control
    }

    /// vCPUs.
    pub fn vcpus(&self) -> u8 {
        self.vcpus
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(&self) -> u64 {
        self.memory_mib
    }

    /// The VM's exit signal (to end it from outside, e.g. a signal handler or control socket).
    pub fn exit_signal(&self) -> &ExitSignal {
        &self.exit
    }

    /// Presses the ACPI power button: the guest agent powers the VM off cleanly (the VM then ends with
    /// [`ExitReason::PowerOff`]).
    pub fn press_power_button(&self) -> std::io::Result<()> {
        self.power_button.write(1)
    }

    /// The power button's eventfd (writing 1 presses it; safe to do from a signal handler).
    pub fn power_button_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.power_button)
    }
}

/// A VM whose files, sockets, memory, devices and vCPUs are all set up, but whose vCPU threads have not started:
/// the process is still single-threaded, so it can enter the jail ([`crate::jail`]) now; nothing after this point
/// opens a path. [`BuiltVm::start`] starts the vCPUs.
pub struct BuiltVm {
    vcpus: Vec<Vcpu>,
    running: RunningVm,
}

impl BuiltVm {
    /// The power button's eventfd (see [`RunningVm::power_button_fd`]), to route SIGTERM before the vCPUs start.
    pub fn power_button_fd(&self) -> std::os::fd::RawFd {
        self.running.power_button_fd()
    }

    /// Starts one thread per vCPU; the guest runs from here on.
    pub fn start(self) -> Result<RunningVm, BuildError> {
        for vcpu in self.vcpus {
            vcpu.spawn().map_err(io("vCPU thread"))?;
        }
        Ok(self.running)
    }
}

/// Builds the VM and starts its vCPUs ([`build`], then [`BuiltVm::start`]).
pub fn start(cfg: &VmConfig) -> Result<RunningVm, BuildError> {
    build(cfg)?.start()
}

/// Builds the VM without starting any thread: every file, socket and device is open, the kernel is loaded, the vCPUs
/// are created and configured.
pub fn build(cfg: &VmConfig) -> Result<BuiltVm, BuildError> {
    if cfg.vcpus == 0 || cfg.vcpus > 32 {
        return Err(BuildError::Config(format!("vCPU count {} outside 1..=32", cfg.vcpus)));
    }
    let mem = memory::create_guest_memory(cfg.memory_mib)?;
    timing::mark("guest memory");
    let vm = Vm::new(&mem)?;
    timing::mark("KVM VM");
    let exit = ExitSignal::new().map_err(io("exit eventfd"))?;

    // Legacy devices on port I/O.
    let mut pio = Bus::new();
    let console_out: Box<dyn Write + Send> = match &cfg.console {
        ConsoleOutput::File(p) => {
            Box::new(OpenOptions::new().create(true).append(true).open(p).map_err(io("console log"))?)
        }
        ConsoleOutput::Stdout => Box::new(std::io::stdout()),
        ConsoleOutput::Null => Box::new(std::io::sink()),
    };
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("serial irqfd"))?;
    vm.fd.register_irqfd(&serial_irq, legacy_serial_irq()).map_err(|e| BuildError::Kvm("KVM_IRQFD", e))?;
    let serial: SharedDevice = Arc::new(Mutex::new(SerialDevice::new(serial_irq, console_out)));
    pio.insert(serial, u64::from(legacy_serial_port()), 8)?;
    pio.insert(Arc::new(Mutex::new(Rtc::new())), u64::from(legacy::RTC_BASE), 2)?;
    pio.insert(Arc::new(Mutex::new(I8042::new(exit.clone()))), u64::from(legacy::I8042_BASE), 5)?;
    pio.insert(Arc::new(Mutex::new(AcpiPower::new(exit.clone()))), u64::from(legacy::ACPI_SLEEP_CONTROL_PORT), 3)?;

    // Virtio devices on MMIO.
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for d in &cfg.disks {
        let disk = Disk::open(&d.path, d.read_only, &d.serial).map_err(io(&d.path.display().to_string()))?;
        devices.push(Box::new(Block::new(disk)));
    }
    if let Some(sock) = &cfg.agent_socket {
        let console = Console::new(sock, crate::devices::virtio::console::AGENT_PORT_NAME)
            .map_err(io(&sock.display().to_string()))?;
        devices.push(Box::new(console));
    }
    if cfg.rng {
        devices.push(Box::new(Rng::new()));
    }
    if devices.len() > VIRTIO_MAX_DEVICES {
        return Err(BuildError::Config(format!("{} virtio devices, at most {VIRTIO_MAX_DEVICES}", devices.len())));
    }
    timing::mark("legacy + device backends");
    let mut mmio = Bus::new();
    let mut infos = Vec::new();
    for (i, dev) in devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let gsi = VIRTIO_IRQ_BASE + i as u32;
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io("virtio irqfd"))?;
        vm.fd.register_irqfd(&irq, gsi).map_err(|e| BuildError::Kvm("KVM_IRQFD", e))?;
        let transport = MmioTransport::new(dev, mem.clone(), irq).map_err(io("virtio queue eventfds"))?;
        for (q, evt) in transport.queue_events().iter().enumerate() {
            vm.fd
                .register_ioevent(evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET), q as u32)
                .map_err(|e| BuildError::Kvm("KVM_IOEVENTFD", e))?;
        }
        mmio.insert(Arc::new(Mutex::new(transport)), base, VIRTIO_MMIO_SIZE)?;
        infos.push(MmioDeviceInfo { base, size: VIRTIO_MMIO_SIZE, gsi });
    }

    let power_button = EventFd::new(libc::EFD_NONBLOCK).map_err(io("power button irqfd"))?;
    vm.fd.register_irqfd(&power_button, GED_GSI).map_err(|e| BuildError::Kvm("KVM_IRQFD", e))?;

    timing::mark("virtio transports");
    acpi::write_tables(
        &mem,
        &AcpiConfig {
            vcpus: cfg.vcpus,
            serial: SerialInfo { port: legacy_serial_port(), irq: legacy_serial_irq() },
            virtio: infos,
            ged_gsi: Some(GED_GSI),
        },
    )?;
    timing::mark("ACPI tables");
    let info = boot::load_linux(&mem, &cfg.kernel, cfg.initramfs.as_deref(), &cfg.cmdline)?;

    let pio = Arc::new(pio);
    let mmio = Arc::new(mmio);
    let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
    let control = Arc::new(RunControl::new(cfg.vcpus));
    for i in 0..cfg.vcpus {
        let fd = vm.fd.create_vcpu(u64::from(i)).map_err(|e| BuildError::Kvm("KVM_CREATE_VCPU", e))?;
        let entry = (i == 0).then_some(info.entry.0);
        cpu::configure_vcpu(&fd, &vm.supported_cpuid, i, cfg.vcpus, entry)?;
        vcpus.push(Vcpu {
            fd,
            index: i,
            pio: pio.clone(),
            mmio: mmio.clone(),
            exit: exit.clone(),
            control: control.clone(),
        });
    }
    timing::mark("vCPUs");
    Ok(BuiltVm {
        vcpus,
        running: RunningVm {
            exit,
            power_button,
            control,
            vcpus: cfg.vcpus,
            memory_mib: cfg.memory_mib,
            _vm: vm,
            _mem: mem,
            _mmio: mmio,
        },
    })
}

fn legacy_serial_port() -> u16 {
    crate::devices::legacy::SERIAL_PORT
}

fn legacy_serial_irq() -> u32 {
    crate::devices::legacy::SERIAL_IRQ
}

/// How long `--timing` waits at most for the boot vCPU's first guest entry.
pub const FIRST_ENTRY_WAIT: Duration = Duration::from_secs(5);
