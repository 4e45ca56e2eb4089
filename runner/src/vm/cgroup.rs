//! cgroup v2 limits for the kvm backend's VMs: one cgroup per VM under a root the runner owns, with `memory.max`
//! (guest memory plus a VMM allowance), `cpu.max` (one period per vCPU) and `pids.max` (the VMM's threads), made
//! before the VMM starts and removed once it has ended.
//!
//! Layout: by default the root is `vms` beside the runner's own cgroup. Under systemd (`Delegate=yes`) the runner
//! starts in its unit's cgroup `U`; cgroup v2's no-internal-processes rule forbids enabling controllers for `U`'s
//! children while `U` holds a process, so the runner first moves itself into the leaf `U/runner`, then enables
//! `memory cpu pids` in `U/cgroup.subtree_control` and in `U/vms`'s; VM `ID` lives in `U/vms/vm-ID`. A runner that
//! already runs in a cgroup named `runner` (a restarted runner that inherited it, or systemd's `DelegateSubgroup=runner`)
//! uses the `vms` beside it. `--cgroup-root` names another root (its ancestors get the controllers enabled).
//!
//! The VMM joins its cgroup in the forked child before exec (the runner's `pre_exec` writes `0` to the cgroup's
//! `cgroup.procs`, opened beforehand), so every page and thread of the VMM, from its first instruction, counts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where cgroup v2 must be mounted.
pub const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The controllers a VM cgroup needs.
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Memory allowed beyond the guest's RAM: the VMM's own memory (about 3 MiB measured), KVM's per-VM and per-vCPU
/// kernel memory (page tables of the guest, accounted to the cgroup) and page cache of the VM's disk I/O.
pub const VMM_MEMORY_OVERHEAD_MIB: u64 = 64;

/// The `cpu.max` period (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Tasks allowed beyond one per vCPU: the main thread, one worker per virtio device (at most 16) and a few spare.
pub const VMM_EXTRA_PIDS: u32 = 24;

/// A cgroup operation failed, or cgroup v2 is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// cgroup v2 is not mounted where it must be.
    #[error(
        "cgroup v2 is not mounted at {CGROUP_FS} (this host has cgroup v1 or a hybrid layout): the kvm backend \
         limits each VM's memory, CPU and tasks with it; boot with systemd.unified_cgroup_hierarchy=1, or pass \
         --no-vm-cgroups (VMs then run without limits)"
    )]
    NotV2,
    /// A controller is not available to the root.
    #[error(
        "the cgroup {root} lacks the {controller} controller (available: {available:?}); enable it in the parent's \
         cgroup.subtree_control (systemd: Delegate=yes), choose another --cgroup-root, or pass --no-vm-cgroups"
    )]
    MissingController {
        /// The root.
        root: String,
        /// The missing controller.
        controller: String,
        /// What is there.
        available: String,
    },
    /// A file operation on the cgroup tree failed.
    #[error("{what} {path}: {error}{hint}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A bad `--cgroup-root`.
    #[error("--cgroup-root {0}: must be a directory under {CGROUP_FS}")]
    BadRoot(PathBuf),
}

fn io(what: &'static str, path: &Path, hint: &'static str) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |error| CgroupError::Io { what, path, error, hint }
}

const EBUSY_HINT: &str = " (a cgroup that holds processes cannot enable controllers for its children: choose a \
                          --cgroup-root whose ancestors hold no processes, or pass --no-vm-cgroups)";

/// The limits of one VM's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: u64,
    /// `cpu.max` quota, µs per [`CPU_PERIOD_US`].
    pub cpu_quota_us: u64,
    /// `pids.max`.
    pub pids_max: u32,
}

impl Limits {
    /// The limits of a VM with `vcpus` vCPUs and `memory_mib` MiB of guest RAM.
    pub fn for_vm(vcpus: u32, memory_mib: u32) -> Self {
        Limits {
            memory_max: (u64::from(memory_mib) + VMM_MEMORY_OVERHEAD_MIB) << 20,
            cpu_quota_us: u64::from(vcpus.max(1)) * CPU_PERIOD_US,
            pids_max: vcpus + VMM_EXTRA_PIDS,
        }
    }

    /// The files and values written into the VM's cgroup.
    pub fn files(&self) -> [(&'static str, String); 3] {
        [
            ("memory.max", self.memory_max.to_string()),
            ("cpu.max", format!("{} {CPU_PERIOD_US}", self.cpu_quota_us)),
            ("pids.max", self.pids_max.to_string()),
        ]
    }
}

/// The runner's own cgroup from `/proc/self/cgroup`'s unified line (`0::/path`).
pub fn own_cgroup(proc_self_cgroup: &str) -> Option<PathBuf> {
    proc_self_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(|p| PathBuf::from(p.trim()))
}

/// The default root (relative to [`CGROUP_FS`]) for a runner in cgroup `own`, and the leaf the runner must move
/// into first (None: it may stay where it is).
pub fn default_root(own: &Path) -> (PathBuf, Option<PathBuf>) {
    let rel = own.strip_prefix("/").unwrap_or(own).to_path_buf();
    if rel.as_os_str().is_empty() {
        // The root cgroup may hold processes and still distribute controllers.
        return (PathBuf::from("vms"), None);
    }
    if rel.file_name().is_some_and(|n| n == "runner") {
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        return (parent.join("vms"), None);
    }
    (rel.join("vms"), Some(rel.join("runner")))
}

/// The name of VM `id`'s cgroup: `vm-` and the id, with anything but `[A-Za-z0-9_.-]` replaced by `_`.
pub fn vm_cgroup_name(id: &str) -> String {
    let clean: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
    format!("vm-{clean}")
}

fn write(path: &Path, value: &str, hint: &'static str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io("writing", path, hint))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io("reading", path, ""))
}

/// Enables [`CONTROLLERS`] for the children of `dir` (those not enabled yet).
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = read(&control)?;
    let missing: Vec<String> =
        CONTROLLERS.iter().filter(|c| !enabled.split_whitespace().any(|e| e == **c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let available = read(&dir.join("cgroup.controllers"))?;
    for c in CONTROLLERS {
        if !available.split_whitespace().any(|a| a == c) {
            return Err(CgroupError::MissingController {
                root: dir.display().to_string(),
                controller: c.to_string(),
                available: available.trim().to_string(),
            });
        }
    }
    write(&control, &missing.join(" "), EBUSY_HINT)
}

/// The directory under which every VM gets its cgroup.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    path: PathBuf,
}

impl CgroupRoot {
    /// Sets the root up: checks cgroup v2, picks the default root (moving the runner into its leaf) unless `root`
    /// is given, creates it, enables the controllers down to it, and removes the cgroups of VMs that ended while
    /// no runner watched them (empty `vm-*` children).
    pub fn prepare(root: Option<&Path>) -> Result<Self, CgroupError> {
        let fs = Path::new(CGROUP_FS);
        if !fs.join("cgroup.controllers").is_file() {
            return Err(CgroupError::NotV2);
        }
        let rel = match root {
            Some(r) => {
                let rel = r.strip_prefix(fs).map_err(|_| CgroupError::BadRoot(r.to_path_buf()))?;
                if rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    return Err(CgroupError::BadRoot(r.to_path_buf()));
                }
                rel.to_path_buf()
            }
            None => {
                let own = own_cgroup(&read(Path::new("/proc/self/cgroup"))?).ok_or(CgroupError::NotV2)?;
                let (root, leaf) = default_root(&own);
                if let Some(leaf) = leaf {
                    let dir = fs.join(leaf);
                    std::fs::create_dir_all(&dir).map_err(io("creating", &dir, ""))?;
                    write(&dir.join("cgroup.procs"), &std::process::id().to_string(), "")?;
                    tracing::info!(cgroup = %dir.display(), "the runner moved itself into a leaf cgroup");
                }
                root
            }
        };
        if rel.as_os_str().is_empty() {
            return Err(CgroupError::BadRoot(fs.to_path_buf()));
        }
        // Every ancestor down to the root's parent, and the root itself, distributes the controllers.
        let mut dir = fs.to_path_buf();
        enable_controllers(&dir)?;
        for c in rel.components() {
            dir.push(c);
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(io("creating", &dir, ""))?;
            }
            enable_controllers(&dir)?;
        }
        let me = CgroupRoot { path: dir };
        me.remove_ended();
        Ok(me)
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// VM `id`'s cgroup (which may not exist).
    pub fn vm(&self, id: &str) -> VmCgroup {
        VmCgroup { path: self.path.join(vm_cgroup_name(id)) }
    }

    /// Creates VM `id`'s cgroup with `limits` (an empty one left from before is reused).
    pub fn create(&self, id: &str, limits: &Limits) -> Result<VmCgroup, CgroupError> {
        let cg = self.vm(id);
        match std::fs::create_dir(&cg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", &cg.path, "")(e)),
        }
        for (file, value) in limits.files() {
            write(&cg.path.join(file), &value, "")?;
        }
        Ok(cg)
    }

    /// Removes every empty VM cgroup (the non-empty ones belong to running VMs and stay).
    fn remove_ended(&self) {
        let Ok(rd) = std::fs::read_dir(&self.path) else { return };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("vm-") && e.path().is_dir() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// One VM's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmCgroup {
    path: PathBuf,
}

impl VmCgroup {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `cgroup.procs`, open for writing (close-on-exec): the VMM's child process writes `0` into it before exec.
    pub fn procs_file(&self) -> Result<File, CgroupError> {
        let p = self.path.join("cgroup.procs");
        OpenOptions::new().write(true).open(&p).map_err(io("opening", &p, ""))
    }

    /// Removes the cgroup once its processes are gone (retrying briefly while an ended VMM is being reaped); a
    /// missing cgroup is fine. What is left is removed when the next runner prepares the root.
    pub fn remove(&self) {
        for _ in 0..20 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        tracing::warn!(cgroup = %self.path.display(), "cannot remove the VM's cgroup yet (processes left?)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_guest_memory_plus_the_allowance_one_period_per_vcpu_and_the_vmm_threads() {
        let l = Limits::for_vm(2, 512);
        assert_eq!(l.memory_max, (512 + 64) << 20);
        assert_eq!(
            l.files(),
            [
                ("memory.max", "603979776".to_string()),
                ("cpu.max", "200000 100000".to_string()),
                ("pids.max", "26".to_string())
            ]
        );
        assert_eq!(Limits::for_vm(0, 128).cpu_quota_us, CPU_PERIOD_US, "at least one CPU's worth");
    }

    #[test]
    fn the_own_cgroup_is_the_unified_line() {
        let hybrid = "12:pids:/x\n1:name=systemd:/system.slice/r.service\n0::/system.slice/r.service\n";
        assert_eq!(own_cgroup(hybrid), Some(PathBuf::from("/system.slice/r.service")));
        assert_eq!(own_cgroup("0::/\n"), Some(PathBuf::from("/")));
        assert_eq!(own_cgroup("4:memory:/a\n"), None, "pure cgroup v1");
    }

    #[test]
    fn the_default_root_is_vms_beside_the_runner_leaf() {
        // Root cgroup (a test VM, a container): no move needed.
        assert_eq!(default_root(Path::new("/")), (PathBuf::from("vms"), None));
        // A systemd unit: move into U/runner, VMs in U/vms.
        assert_eq!(
            default_root(Path::new("/system.slice/boxyard-runner.service")),
            (
                PathBuf::from("system.slice/boxyard-runner.service/vms"),
                Some(PathBuf::from("system.slice/boxyard-runner.service/runner"))
            )
        );
        // Already in the leaf (a restart, or DelegateSubgroup=runner): the same root, no move.
        assert_eq!(
            default_root(Path::new("/system.slice/boxyard-runner.service/runner")),
            (PathBuf::from("system.slice/boxyard-runner.service/vms"), None)
        );
    }

    #[test]
    fn vm_cgroup_names_cannot_escape_the_root() {
        assert_eq!(vm_cgroup_name("b1"), "vm-b1");
        assert_eq!(vm_cgroup_name("../x/y"), "vm-.._x_y");
        assert!(!vm_cgroup_name("a/b").contains('/'));
    }

    #[test]
    fn a_root_outside_the_cgroup_fs_is_refused() {
        if !Path::new(CGROUP_FS).join("cgroup.controllers").is_file() {
            assert!(matches!(CgroupRoot::prepare(Some(Path::new("/sys/fs/cgroup/x"))), Err(CgroupError::NotV2)));
            return;
        }
        for bad in ["/tmp/x", "/sys/fs/cgroup/../x", "/sys/fs/cgroup"] {
            assert!(matches!(CgroupRoot::prepare(Some(Path::new(bad))), Err(CgroupError::BadRoot(_))), "{bad}");
        }
    }
}
