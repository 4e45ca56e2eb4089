//! Mounts of early boot, the overlay root, and the final power-off.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};

use super::{BootOptions, InitError, ROOT_SERIAL, RW_SERIAL, step};

const DEVICE_WAIT: Duration = Duration::from_secs(10);

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), InitError> {
    let _ = std::fs::create_dir_all(target);
    step(format!("mount {fstype} on {target}"), mount(Some(src), target, Some(fstype), flags, data))
}

/// /dev, /proc and /sys of the initramfs.
pub fn early_mounts() -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mnt("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    mnt("proc", "/proc", "proc", nosuid, None)?;
    mnt("sysfs", "/sys", "sysfs", nosuid, None)?;
    Ok(())
}

/// Points stdin, stdout and stderr at the console (the initramfs has no /dev/console for the kernel to open).
pub fn console_stdio() {
    if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
        use std::os::fd::AsRawFd;
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(f.as_raw_fd(), target) };
        }
    }
}

/// Finds the /dev node of the virtio-blk disk with this serial, waiting for the driver to probe it.
fn disk_by_serial(serial: &str, wait: Duration) -> Option<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/block") {
            for e in dir.flatten() {
                if std::fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim() == serial) {
                    return Some(Path::new("/dev").join(e.file_name()));
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Mounts the root image under an overlay whose upper layer is on the writable disk, and moves into it.
pub fn switch_root(opts: &BootOptions) -> Result<(), InitError> {
    let root = disk_by_serial(ROOT_SERIAL, DEVICE_WAIT).ok_or_else(|| {
        InitError::Missing(format!("no root disk: no virtio-blk disk with serial {ROOT_SERIAL:?} appeared"))
    })?;
    let lower = "/run/boxyard/lower";
    let rw = "/run/boxyard/rw";
    let new_root = "/newroot";
    let ro = MsFlags::MS_RDONLY;
    let root_src = root.to_string_lossy();
    mnt(&root_src, lower, "ext4", ro, Some("noload")).or_else(|_| mnt(&root_src, lower, "ext4", ro, None))?;
    // The writable disk is optional: without one the upper layer is memory (writes vanish at power-off).
    match disk_by_serial(RW_SERIAL, Duration::from_millis(0)).or_else(|| disk_by_serial(RW_SERIAL, DEVICE_WAIT / 10)) {
        Some(disk) => mnt(&disk.to_string_lossy(), rw, "ext4", MsFlags::MS_NOATIME, None)?,
        None => mnt("tmpfs", rw, "tmpfs", MsFlags::empty(), Some("mode=0755"))?,
    }
    for d in ["upper", "work"] {
        step(format!("create {rw}/{d}"), std::fs::create_dir_all(format!("{rw}/{d}")))?;
    }
    let data = format!("lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work");
    mnt("overlay", new_root, "overlay", MsFlags::empty(), Some(&data))?;

    for d in ["dev", "proc", "sys"] {
        let target = format!("{new_root}/{d}");
        let _ = std::fs::create_dir_all(&target);
        step(
            format!("move /{d}"),
            mount(Some(&*format!("/{d}")), &*target, None::<&str>, MsFlags::MS_MOVE, None::<&str>),
        )?;
    }
    // Free the initramfs copy of the agent and the modules: nothing needs them any more.
    let _ = std::fs::remove_dir_all("/lib/modules/boxyard");
    let _ = std::fs::remove_file("/init");

    step("chdir new root", std::env::set_current_dir(new_root))?;
    step("move new root to /", mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>))?;
    step("chroot", nix::unistd::chroot("."))?;
    step("chdir /", std::env::set_current_dir("/"))?;

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mnt("devpts", "/dev/pts", "devpts", nosuid, Some("gid=5,mode=620,ptmxmode=666"))?;
    mnt("tmpfs", "/dev/shm", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777"))?;
    mnt("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))?;
    let _ = nix::unistd::sethostname(opts.hostname.as_deref().unwrap_or("boxyard"));
    loopback_up();
    Ok(())
}

/// Brings up `lo` so programs in the box can use 127.0.0.1.
fn loopback_up() {
    // SAFETY: a plain socket and the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls on a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(s);
    }
}

/// Ends every process, flushes the disks and powers the VM off. Never returns.
pub fn power_off() -> ! {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::Signal::SIGKILL);
    nix::unistd::sync();
    // Remount the writable disk read-only so its journal is clean; best effort.
    let _ = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>);
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Reboot failing is not recoverable for PID 1: exiting panics the kernel, which (panic=-1) ends the VM.
    std::process::exit(1)
}
