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

/// What a box needs from a runner.
#[derive(Debug, Clone)]
pub struct Demand {
    pub vcpus: i32,
    pub memory_mib: i64,
    /// Labels the runner must have (a JSON object of strings).
    pub selector: serde_json::Value,
    /// The snapshot the box boots from (runners with it cached score higher).
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub name: String,
    pub capacity_vcpus: i32,
    pub capacity_memory_mib: i64,
    pub used_vcpus: i64,
    pub used_memory_mib: i64,
    pub starting: i64,
    pub has_snapshot: bool,
}

impl Candidate {
    fn free(&self, cfg: &Config) -> (f64, f64) {
        (
            self.capacity_vcpus as f64 * cfg.cpu_overcommit - self.used_vcpus as f64,
            self.capacity_memory_mib as f64 * cfg.memory_overcommit - self.used_memory_mib as f64,
        )
    }

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

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "no ready runner that takes new boxes (not cordoned or draining, with a snapshot store for snapshot boxes) has the labels {0}"
    )]
    NoRunnerMatches(serde_json::Value),
    #[error("no runner has {vcpus} vCPUs and {memory_mib} MiB free right now")]
    NoCapacity { vcpus: i32, memory_mib: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Runners able to take `d`, best first, excluding `tried`.
pub async fn candidates(
    db: &sqlx::PgPool,
    cfg: &Config,
    d: &Demand,
    tried: &[Uuid],
) -> Result<Vec<Candidate>, ScheduleError> {
    let all: Vec<Candidate> = sqlx::query_as(
        "SELECT r.id, r.name, r.capacity_vcpus, r.capacity_memory_mib,
                coalesce(a.vcpus, 0)::bigint AS used_vcpus, coalesce(a.mem, 0)::bigint AS used_memory_mib,
                coalesce(a.starting, 0)::bigint AS starting,
                ($2::text IS NOT NULL AND $2 = ANY(r.cached_snapshots)) AS has_snapshot
           FROM runners r
           LEFT JOIN LATERAL (
                SELECT sum(b.vcpus) AS vcpus, sum(b.memory_mib) AS mem,
                       count(*) FILTER (WHERE b.state IN ('pending', 'starting')) AS starting
                  FROM boxes b WHERE b.runner_id = r.id AND b.reserved) a ON true
          WHERE r.state = 'ready' AND NOT r.draining AND NOT r.cordoned AND r.labels @> $1
            AND ($2::text IS NULL OR r.snapshots_enabled)",
    )
    .bind(&d.selector)
    .bind(&d.snapshot)
    .fetch_all(db)
    .await?;
    if all.is_empty() {
        return Err(ScheduleError::NoRunnerMatches(d.selector.clone()));
    }
    let mut rng = rand::rng();
    let mut fit: Vec<(f64, Candidate)> = all
        .into_iter()
        .filter(|c| !tried.contains(&c.id) && c.fits(cfg, d))
        // A little noise spreads simultaneous placements over equally good runners.
        .map(|c| (c.score(cfg, d) + rng.random_range(0.0..0.01), c))
        .collect();
    if fit.is_empty() {
        return Err(ScheduleError::NoCapacity { vcpus: d.vcpus, memory_mib: d.memory_mib });
    }
    fit.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(fit.into_iter().map(|(_, c)| c).collect())
}

/// Reserves `d` on `runner` for `box_id` (and records the box as `starting` there). False when the runner no longer
/// fits or is no longer schedulable; the caller tries the next candidate.
///
/// `pinned`: the box already lives on this runner (starting a stopped box): cordoned or draining runners still take
/// it back, since its disk is there.
pub async fn reserve(
    db: &sqlx::PgPool,
    cfg: &Config,
    box_id: Uuid,
    runner: Uuid,
    d: &Demand,
    pinned: bool,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let cap: Option<(i32, i64)> = sqlx::query_as(
        "SELECT capacity_vcpus, capacity_memory_mib FROM runners
          WHERE id = $1 AND state = 'ready' AND ($2 OR (NOT draining AND NOT cordoned))
          FOR UPDATE",
    )
    .bind(runner)
    .bind(pinned)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((cap_cpu, cap_mem)) = cap else { return Ok(false) };
    let (used_cpu, used_mem): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(vcpus), 0)::bigint, coalesce(sum(memory_mib), 0)::bigint
           FROM boxes WHERE runner_id = $1 AND reserved AND id <> $2",
    )
    .bind(runner)
    .bind(box_id)
    .fetch_one(&mut *tx)
    .await?;
    let c = Candidate {
        id: runner,
        name: String::new(),
        capacity_vcpus: cap_cpu,
        capacity_memory_mib: cap_mem,
        used_vcpus: used_cpu,
        used_memory_mib: used_mem,
        starting: 0,
        has_snapshot: false,
    };
    if !c.fits(cfg, d) {
        return Ok(false);
    }
    let n = sqlx::query(
        "UPDATE boxes SET runner_id = $2, reserved = true, state = 'starting', reason = NULL, updated_at = now()
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(box_id)
    .bind(runner)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Gives a box's reservation back.
pub async fn release<'e, E: sqlx::PgExecutor<'e>>(db: E, box_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET reserved = false, updated_at = now() WHERE id = $1").bind(box_id).execute(db).await?;
    Ok(())
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
