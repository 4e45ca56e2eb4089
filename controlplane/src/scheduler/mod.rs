//! The scheduler: picks a runner for a box and reserves capacity on it.
//!
//! 1. **Filter**: runners that are `ready`, neither draining nor cordoned, whose labels include the box's runner
//!    selector, that have a snapshot store when the box boots from a snapshot, and whose free capacity (capacity × overcommit − reservations) fits the box.
//! 2. **Score**: more free memory and CPU is better, boxes already starting there count against it (spreads bursts),
//!    and a runner that has the box's snapshot cached gets a bonus (the locality hook used by the snapshot store).
//! 3. **Reserve**: in one transaction that locks the runner's row, re-check the fit against the reservations
//!    recorded in `boxes` and mark the box as reserved there. Replicas placing at the same time serialize on that
//!    row lock, so a runner is never overbooked, whichever replica placed what.
//!
//! Reservations are not a counter beside the data: a runner's usage is the sum over its reserved boxes, so it can
//! never drift from them.

use rand::Rng;
use uuid::Uuid;

use crate::config::Config;
use crate::store::StoreError;
use crate::store::boxes::BoxRow;
use crate::store::placement::{self, RunnerLoad};

/// What a box needs from a runner.
#[derive(Debug, Clone)]
pub struct Demand {
    /// vCPUs.
    pub vcpus: i32,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Labels the runner must have (a JSON object of strings).
    pub selector: serde_json::Value,
    /// The snapshot the box boots from (runners with it cached score higher).
    pub snapshot: Option<String>,
}

/// A runner that may take a box: its capacity and what is reserved on it.
pub type Candidate = RunnerLoad;

impl RunnerLoad {
    fn free(&self, cfg: &Config) -> (f64, f64) {
        (
            self.capacity_vcpus as f64 * cfg.cpu_overcommit - self.used_vcpus as f64,
            self.capacity_memory_mib as f64 * cfg.memory_overcommit - self.used_memory_mib as f64,
        )
    }

    /// Whether `d` fits in what is free (capacity × overcommit − reservations).
    pub fn fits(&self, cfg: &Config, d: &Demand) -> bool {
        let (cpu, mem) = self.free(cfg);
        cpu >= d.vcpus as f64 && mem >= d.memory_mib as f64
    }

    /// Higher is better.
    pub fn score(&self, cfg: &Config, d: &Demand) -> f64 {
        let (cpu, mem) = self.free(cfg);
        let cpu_frac = cpu / (self.capacity_vcpus.max(1) as f64 * cfg.cpu_overcommit);
        let mem_frac = mem / (self.capacity_memory_mib.max(1) as f64 * cfg.memory_overcommit);
        let locality = if d.snapshot.is_some() && self.has_snapshot { 1.5 } else { 0.0 };
        mem_frac + cpu_frac - 0.25 * self.starting as f64 + locality
    }
}

/// Why no runner was found.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No schedulable runner has the selector's labels.
    #[error(
        "no ready runner that takes new boxes (not cordoned or draining, with a snapshot store for snapshot boxes) has the labels {0}"
    )]
    NoRunnerMatches(serde_json::Value),
    /// Runners match, none has room.
    #[error("no runner has {vcpus} vCPUs and {memory_mib} MiB free right now")]
    NoCapacity {
        /// vCPUs asked for.
        vcpus: i32,
        /// MiB asked for.
        memory_mib: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ScheduleError {
    fn from(e: sqlx::Error) -> Self {
        ScheduleError::Store(e.into())
    }
}

/// How many of the best runners the database returns for one placement (they are re-scored here, with jitter).
const SHORTLIST: i64 = 16;

/// Runners able to take `d`, best first, excluding `tried` (at most a short list of the best).
pub async fn candidates(
    db: &sqlx::PgPool,
    cfg: &Config,
    d: &Demand,
    tried: &[Uuid],
) -> Result<Vec<Candidate>, ScheduleError> {
    let want = placement::Want {
        selector: &d.selector,
        snapshot: d.snapshot.as_deref(),
        vcpus: d.vcpus,
        memory_mib: d.memory_mib,
        cpu_overcommit: cfg.cpu_overcommit,
        memory_overcommit: cfg.memory_overcommit,
        exclude: tried,
        limit: SHORTLIST,
    };
    let (matched, all) = placement::schedulable(db, &want).await?;
    if !matched {
        return Err(ScheduleError::NoRunnerMatches(d.selector.clone()));
    }
    let mut rng = rand::rng();
    let mut fit: Vec<(f64, Candidate)> = all
        .into_iter()
        .filter(|c| c.fits(cfg, d))
        // A little noise spreads simultaneous placements over equally good runners.
        .map(|c| (c.score(cfg, d) + rng.random_range(0.0..0.01), c))
        .collect();
    if fit.is_empty() {
        return Err(ScheduleError::NoCapacity { vcpus: d.vcpus, memory_mib: d.memory_mib });
    }
    fit.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(fit.into_iter().map(|(_, c)| c).collect())
}

/// Reserves `d` on `runner` for box `b` (and records the box as `starting` there). Ok(None) when the runner no
/// longer fits or is no longer schedulable; the caller tries the next candidate.
///
/// `pinned`: the box already lives on this runner (starting a stopped box): cordoned or draining runners still take
/// it back, since its disk is there.
pub async fn reserve(
    db: &sqlx::PgPool,
    cfg: &Config,
    b: &BoxRow,
    runner: Uuid,
    d: &Demand,
    pinned: bool,
) -> Result<Option<BoxRow>, StoreError> {
    placement::reserve(db, b, runner, pinned, |load| load.fits(cfg, d)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(cap_cpu: i32, cap_mem: i64, used_cpu: i64, used_mem: i64) -> Candidate {
        Candidate {
            id: Uuid::nil(),
            name: "r".into(),
            capacity_vcpus: cap_cpu,
            capacity_memory_mib: cap_mem,
            used_vcpus: used_cpu,
            used_memory_mib: used_mem,
            starting: 0,
            has_snapshot: false,
        }
    }

    fn demand(vcpus: i32, memory_mib: i64) -> Demand {
        Demand { vcpus, memory_mib, selector: serde_json::json!({}), snapshot: None }
    }

    #[test]
    fn fit_honours_overcommit() {
        let mut cfg = Config::default();
        let c = cand(4, 4096, 4, 1024);
        assert!(!c.fits(&cfg, &demand(1, 512)));
        cfg.cpu_overcommit = 2.0;
        assert!(c.fits(&cfg, &demand(1, 512)));
        assert!(!c.fits(&cfg, &demand(1, 4096)));
    }

    #[test]
    fn score_prefers_free_runners_and_cached_snapshots() {
        let cfg = Config::default();
        let d = demand(1, 512);
        assert!(cand(4, 4096, 0, 0).score(&cfg, &d) > cand(4, 4096, 2, 2048).score(&cfg, &d));
        let mut busy_starting = cand(4, 4096, 0, 0);
        busy_starting.starting = 3;
        assert!(cand(4, 4096, 1, 1024).score(&cfg, &d) > busy_starting.score(&cfg, &d));
        let d = Demand { snapshot: Some("sha256:x".into()), ..d };
        let mut cached = cand(4, 4096, 2, 2048);
        cached.has_snapshot = true;
        assert!(cached.score(&cfg, &d) > cand(4, 4096, 0, 0).score(&cfg, &d));
    }
}
