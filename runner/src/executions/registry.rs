//! The runner-wide registry of executions (every execution of every box, by id), and the per-id guard that keeps
//! two creations of one execution id apart without holding up creations of other ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use super::Execution;
use crate::error::{Result, RunnerError};

/// Every execution the runner holds.
#[derive(Default)]
pub struct Registry {
    map: RwLock<HashMap<String, Arc<Execution>>>,
    /// One lock per execution id being created; entries whose lock nobody holds are dropped on the next use.
    creating: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while one execution id is being created: a second creation of the same id waits for it.
pub struct IdGuard {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// The execution with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// The execution with this id, or NOT_FOUND.
    pub fn find(&self, id: &str) -> Result<Arc<Execution>> {
        self.get(id).ok_or_else(|| RunnerError::not_found("execution", id))
    }

    /// Adds (or replaces) an execution.
    pub fn insert(&self, exec: Arc<Execution>) {
        self.map.write().unwrap_or_else(PoisonError::into_inner).insert(exec.id().to_string(), exec);
    }

    /// Forgets an execution (its attaches end).
    pub fn remove(&self, id: &str) {
        if let Some(e) = self.map.write().unwrap_or_else(PoisonError::into_inner).remove(id) {
            e.mark_gone();
        }
    }

    /// The executions of one box, oldest first.
    pub fn of_box(&self, box_id: &str) -> Vec<Arc<Execution>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| e.meta.box_id == box_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.meta.created_unix_ms, a.id()).cmp(&(b.meta.created_unix_ms, b.id())));
        v
    }

    /// The box's executions that have not finished.
    pub fn unfinished_of_box(&self, box_id: &str) -> Vec<Arc<Execution>> {
        self.of_box(box_id).into_iter().filter(|e| !e.is_finished()).collect()
    }

    /// Forgets every execution of a box (it was destroyed): their attaches end with NOT_FOUND.
    pub fn remove_box(&self, box_id: &str) {
        self.map.write().unwrap_or_else(PoisonError::into_inner).retain(|_, e| {
            let keep = e.meta.box_id != box_id;
            if !keep {
                e.mark_gone();
            }
            keep
        });
    }

    /// Removes and returns the executions that finished at or before `finished_before_ms`, marked gone.
    pub fn take_finished_before(&self, finished_before_ms: u64) -> Vec<Arc<Execution>> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<String> = map
            .values()
            .filter(|e| e.result().is_some_and(|r| r.finished_unix_ms <= finished_before_ms))
            .map(|e| e.id().to_string())
            .collect();
        let taken: Vec<_> = ids.iter().filter_map(|id| map.remove(id)).collect();
        for e in &taken {
            e.mark_gone();
        }
        taken
    }

    /// Serializes the creation of one execution id: hold the guard from "does it exist?" until it is inserted.
    pub async fn lock_id(&self, id: &str) -> IdGuard {
        let lock = {
            let mut creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
            creating.retain(|_, w| w.strong_count() > 0);
            match creating.get(id).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    creating.insert(id.to_string(), Arc::downgrade(&l));
                    l
                }
            }
        };
        IdGuard { _held: lock.lock_owned().await }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Registry;

    #[tokio::test]
    async fn one_id_waits_for_itself_but_not_for_others() {
        let r = Registry::new();
        let a = r.lock_id("a").await;
        // Another id is not held up.
        tokio::time::timeout(Duration::from_secs(1), r.lock_id("b")).await.expect("b is independent of a");
        // The same id waits until the first guard is dropped.
        assert!(tokio::time::timeout(Duration::from_millis(100), r.lock_id("a")).await.is_err());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), r.lock_id("a")).await.expect("a is free again");
        assert!(r.creating.lock().unwrap().values().all(|w| w.strong_count() == 0));
    }
}
