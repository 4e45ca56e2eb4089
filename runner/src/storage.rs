//! The seam between the runner's durable files and the disk: every write, fsync and file creation of the execution
//! logs ([`crate::execlog`]) and of the state records ([`crate::store`]) goes through [`Storage::run`], which counts
//! failures (`boxyard_runner_storage_errors_total` in `/metrics`) and lets tests inject them (ENOSPC, EIO, a failing
//! fsync) with [`Storage::inject`], the way a full or failing disk would produce them.
//!
//! Nothing is injected unless a test asks: in production [`Storage::run`] costs one uncontended lock check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Which files an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Execution output logs.
    Log,
    /// State records (box.json, exec.json, result.json, markers).
    Records,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writing bytes.
    Write,
    /// fsync / fdatasync.
    Sync,
    /// Creating a file.
    Create,
}

/// A failure to inject: operations in `areas` and `ops` fail with the OS error `errno` until cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The error, e.g. `libc::ENOSPC` or `libc::EIO`.
    pub errno: i32,
    /// The files it hits.
    pub areas: Vec<Area>,
    /// The operations it hits.
    pub ops: Vec<Op>,
}

impl Fault {
    /// A full disk: every write and file creation fails with ENOSPC (fsyncs of what is written still work).
    pub fn disk_full(areas: &[Area]) -> Self {
        Fault { errno: libc::ENOSPC, areas: areas.to_vec(), ops: vec![Op::Write, Op::Create] }
    }

    /// A failing disk: fsyncs fail with EIO.
    pub fn fsync_fails(areas: &[Area]) -> Self {
        Fault { errno: libc::EIO, areas: areas.to_vec(), ops: vec![Op::Sync] }
    }
}

/// The runner's storage: the failure counter and the injected fault, if any.
#[derive(Debug, Default)]
pub struct Storage {
    fault: Mutex<Option<Fault>>,
    errors: AtomicU64,
}

impl Storage {
    /// Storage without faults.
    pub fn new() -> Self {
        Storage::default()
    }

    /// Runs one storage operation: fails it if an injected fault covers it, counts it if it fails.
    pub fn run<T>(&self, area: Area, op: Op, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let injected = self
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|x| x.areas.contains(&area) && x.ops.contains(&op))
            .map(|x| x.errno);
        let r = match injected {
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => f(),
        };
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// From now on, operations the fault covers fail (tests).
    pub fn inject(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(fault);
    }

    /// Ends an injected fault: the disk "has space again".
    pub fn clear(&self) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Storage operations that failed since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_injected_fault_fails_only_what_it_covers_and_is_counted() {
        let s = Storage::new();
        assert!(s.run(Area::Log, Op::Write, || Ok(())).is_ok());
        s.inject(Fault::disk_full(&[Area::Log]));
        let e = s.run(Area::Log, Op::Write, || Ok(())).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(s.run(Area::Log, Op::Sync, || Ok(())).is_ok());
        assert!(s.run(Area::Records, Op::Write, || Ok(())).is_ok());
        s.clear();
        assert!(s.run(Area::Log, Op::Write, || Ok(())).is_ok());
        assert_eq!(s.errors(), 1);
    }
}
