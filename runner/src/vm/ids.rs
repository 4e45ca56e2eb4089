//! The unprivileged ids the kvm backend's VMMs run as: each VM gets one number from a configurable range, used as
//! both its uid and its gid, unique among the VMs this runner knows (started or re-adopted). The number is recorded
//! in the VM's run directory (`vmm.uid`), so a restarted runner takes it back when it re-adopts the VM (recovery
//! re-adopts every box before the runner serves, so no new VM can be handed a live VM's id).
//!
//! A VM of its own uid cannot signal, ptrace or read the memory of another VM's VMM, and owns no host file.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// The default range: 65,536 ids in a block no distribution or systemd hands out (systemd reserves
/// 524288–1879048191 for containers and everything from 2^31 on).
pub const DEFAULT_RANGE: RangeInclusive<u32> = 1_900_000_000..=1_900_065_535;

/// The file in a VM's run directory that records its id.
pub const ID_FILE: &str = "vmm.uid";

/// No id left, or a bad range.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// Every id of the range is in use.
    #[error("all {0} VM ids of --vm-id-range are in use: widen the range or stop VMs")]
    Exhausted(u64),
    /// The range cannot be used.
    #[error("--vm-id-range {0}: {1}")]
    BadRange(String, &'static str),
}

/// Parses `FIRST-LAST` (inclusive; ids 0 and 4294967295 are refused: root and the kernel's "no id").
pub fn parse_range(s: &str) -> Result<RangeInclusive<u32>, IdError> {
    let bad = |why| IdError::BadRange(s.to_string(), why);
    let (a, b) = s.split_once('-').ok_or_else(|| bad("expected FIRST-LAST, e.g. 1900000000-1900065535"))?;
    let first: u32 = a.trim().parse().map_err(|_| bad("FIRST is not a number"))?;
    let last: u32 = b.trim().parse().map_err(|_| bad("LAST is not a number"))?;
    if first == 0 {
        return Err(bad("0 is root"));
    }
    if last == u32::MAX {
        return Err(bad("4294967295 is the kernel's \"no id\""));
    }
    if last < first {
        return Err(bad("LAST is below FIRST"));
    }
    Ok(first..=last)
}

/// The ids in use and the range they come from (shared by every clone of the backend).
#[derive(Clone, Debug)]
pub struct IdPool {
    range: RangeInclusive<u32>,
    used: Arc<Mutex<BTreeSet<u32>>>,
}

impl IdPool {
    /// An empty pool over `range`.
    pub fn new(range: RangeInclusive<u32>) -> Self {
        IdPool { range, used: Arc::default() }
    }

    /// The range.
    pub fn range(&self) -> &RangeInclusive<u32> {
        &self.range
    }

    /// Takes the lowest free id and records it in `run_dir`.
    pub fn allocate(&self, run_dir: &Path) -> Result<u32, crate::vm::VmError> {
        let id = {
            let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
            let id =
                self.range.clone().find(|i| !used.contains(i)).ok_or_else(|| {
                    IdError::Exhausted(u64::from(*self.range.end()) - u64::from(*self.range.start()) + 1)
                })?;
            used.insert(id);
            id
        };
        if let Err(e) = std::fs::write(run_dir.join(ID_FILE), format!("{id}\n")) {
            self.release(id);
            return Err(e.into());
        }
        Ok(id)
    }

    /// Marks the id recorded in `run_dir` as used (a re-adopted VM); returns it.
    pub fn reclaim(&self, run_dir: &Path) -> Option<u32> {
        let id = read_id(run_dir).filter(|i| self.range.contains(i))?;
        self.used.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
        Some(id)
    }

    /// Gives `id` back.
    pub fn release(&self, id: u32) {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// How many ids are in use.
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The id recorded in a VM's run directory.
pub fn read_id(run_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(run_dir.join(ID_FILE)).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_root_and_minus_one() {
        assert_eq!(parse_range("100-199").unwrap(), 100..=199);
        assert!(parse_range("0-10").is_err());
        assert!(parse_range("10-4294967295").is_err());
        assert!(parse_range("20-10").is_err());
        assert!(parse_range("10").is_err());
        assert!(parse_range("a-b").is_err());
        assert_eq!(parse_range("7-7").unwrap(), 7..=7);
    }

    #[test]
    fn ids_are_unique_among_live_vms_recorded_and_reused_after_release() {
        let pool = IdPool::new(100..=102);
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = pool.allocate(dirs[0].path()).unwrap();
        let b = pool.allocate(dirs[1].path()).unwrap();
        let c = pool.allocate(dirs[2].path()).unwrap();
        assert_eq!((a, b, c), (100, 101, 102));
        assert_eq!(read_id(dirs[1].path()), Some(101));
        assert!(matches!(pool.allocate(dirs[3].path()).unwrap_err(), crate::vm::VmError::Ids(IdError::Exhausted(3))));
        pool.release(b);
        assert_eq!(pool.allocate(dirs[3].path()).unwrap(), 101);
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn a_restarted_runner_takes_back_the_ids_of_the_vms_it_adopts() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let before = IdPool::new(100..=199);
        assert_eq!(before.allocate(dirs[0].path()).unwrap(), 100);
        // A new runner process: a fresh pool, the run directory survives.
        let after = IdPool::new(100..=199);
        assert_eq!(after.reclaim(dirs[0].path()), Some(100));
        assert_eq!(after.allocate(dirs[1].path()).unwrap(), 101, "the adopted VM's id is not handed out again");
        // An id outside the (changed) range is not tracked.
        std::fs::write(dirs[1].path().join(ID_FILE), "5\n").unwrap();
        assert_eq!(after.reclaim(dirs[1].path()), None);
    }
}
