//! The floor under `boxyard-vmm`'s start-up, for `scripts/bench-vmm-start.sh`: the least a KVM monitor process can
//! do before its first guest instruction, measured the way `boxyard-vmm --timing` measures itself.
//!
//! It opens /dev/kvm, creates a VM with one memfd-backed memory slot of the same size as the VMM's default guest RAM
//! (512 MiB), optionally copies files into that memfd the way the VMM loads its kernel and initramfs (`--load FILE`,
//! repeatable: sendfile(2) into the memfd, one file after the other from 1 MiB), creates one vCPU in real mode at a
//! `hlt`, and prints the process CPU time and the monotonic clock just before the first `KVM_RUN`, in the same
//! format as the VMM's "first guest entry" line. No irqchip, no devices, no threads, no seccomp, no command-line
//! crate: everything a real monitor adds above this is the VMM's own cost.
//!
//! `cargo build --release -p boxyard-vmm --example start_floor`

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::Kvm;

const MEM_SIZE: u64 = 512 << 20;
const CODE_ADDR: u64 = 0x1000;
const LOAD_ADDR: u64 = 0x10_0000;

fn main() {
    if let Err(e) = run() {
        eprintln!("start_floor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let loads: Vec<String> = {
        let mut a = std::env::args().skip(1);
        let mut v = Vec::new();
        while let Some(arg) = a.next() {
            match (arg.as_str(), a.next()) {
                ("--load", Some(f)) => v.push(f),
                _ => return Err(format!("usage: start_floor [--load FILE]... (got {arg:?})").into()),
            }
        }
        v
    };
    // SAFETY: a constant NUL-terminated name; the descriptor is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"start-floor".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh descriptor we own.
    let mem = unsafe { File::from_raw_fd(fd) };
    mem.set_len(MEM_SIZE)?;
    // SAFETY: a shared mapping of the whole memfd; it lives until the process exits.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            mem.as_raw_fd(),
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }

    let kvm = Kvm::new()?;
    let vm = kvm.create_vm()?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE,
        userspace_addr: host as u64,
    };
    // SAFETY: the mapping covers memory_size bytes and outlives the VM.
    unsafe { vm.set_user_memory_region(region)? };

    let mut at = LOAD_ADDR;
    for path in &loads {
        let f = File::open(path)?;
        let len = f.metadata()?.len();
        if at + len > MEM_SIZE {
            return Err(format!("{path} does not fit").into());
        }
        let mut in_off: libc::off_t = 0;
        let mut left = len as usize;
        // SAFETY: lseek/sendfile on descriptors we own; in_off is a valid out-pointer.
        unsafe {
            if libc::lseek(mem.as_raw_fd(), at as libc::off_t, libc::SEEK_SET) < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            while left > 0 {
                let n = libc::sendfile(mem.as_raw_fd(), f.as_raw_fd(), &mut in_off, left);
                if n <= 0 {
                    return Err(format!("sendfile {path}: {}", std::io::Error::last_os_error()).into());
                }
                left -= n as usize;
            }
        }
        at = (at + len + 0xfff) & !0xfff;
    }

    // hlt at CODE_ADDR, entered in real mode.
    // SAFETY: CODE_ADDR is inside the mapping.
    unsafe { *(host as *mut u8).add(CODE_ADDR as usize) = 0xf4 };
    let mut vcpu = vm.create_vcpu(0)?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)?;
    let regs = kvm_bindings::kvm_regs { rip: CODE_ADDR, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs)?;

    let entry = boxyard_vmm::timing::Stamp::now();
    let exit = format!("{:?}", vcpu.run()?);
    println!(
        "start_floor: first guest entry ({:.2} CPU-ms since process start; at monotonic {:.3} ms); loaded {} file(s); exit {exit}",
        entry.process_cpu_ms,
        entry.monotonic_ms,
        loads.len()
    );
    Ok(())
}
