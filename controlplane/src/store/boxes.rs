//! The `boxes` table: every statement that reads or writes it. State changes go through [`transition`], which
//! checks the edge against the state machine's table and the row's `generation` (optimistic concurrency).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::StoreError;
use crate::machine::{BoxRules, BoxState, DesiredState};

/// The columns of a [`BoxRow`].
pub const SELECT_BOX: &str = "SELECT id, org_id, name, snapshot, vcpus, memory_mib, disk_mib, env, labels,
        runner_selector, runner_id, reserved, state, desired_state, reason, auto_stop_seconds, ttl_seconds,
        created_at, updated_at, started_at, stopped_at, last_activity_at, deleted_at, snapshot_id, snapshot_digest,
        generation, observed_version FROM boxes";

/// A box as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoxRow {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// The org it belongs to.
    pub org_id: Uuid,
    /// Its optional name.
    pub name: Option<String>,
    /// The snapshot name the user asked for.
    pub snapshot: Option<String>,
    /// vCPUs.
    pub vcpus: i32,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Writable disk in MiB.
    pub disk_mib: i64,
    /// Environment of every execution (the snapshot's, then the box's own).
    pub env: Json<BTreeMap<String, String>>,
    /// User labels.
    pub labels: Json<BTreeMap<String, String>>,
    /// Labels its runner must have.
    pub runner_selector: Json<BTreeMap<String, String>>,
    /// The runner it is placed on.
    pub runner_id: Option<Uuid>,
    /// Whether its vCPUs and memory count against its runner's capacity.
    pub reserved: bool,
    /// Its state.
    #[sqlx(try_from = "String")]
    pub state: BoxState,
    /// What the user asked for.
    #[sqlx(try_from = "String")]
    pub desired_state: DesiredState,
    /// Why it is in its state, when it was not asked to be.
    pub reason: Option<String>,
    /// Idle seconds after which it stops.
    pub auto_stop_seconds: Option<i32>,
    /// Seconds after creation after which it is deleted.
    pub ttl_seconds: Option<i32>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last boot.
    pub started_at: Option<DateTime<Utc>>,
    /// Last stop.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Last activity (postpones auto-stop).
    pub last_activity_at: DateTime<Utc>,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The resolved snapshot.
    pub snapshot_id: Option<Uuid>,
    /// The resolved snapshot's image digest.
    pub snapshot_digest: Option<String>,
    /// Bumped by every state write (optimistic concurrency).
    pub generation: i64,
    /// The highest runner state version applied (0: none).
    pub observed_version: i64,
}

/// What a new box asks for (validated by the API layer).
#[derive(Debug, Clone)]
pub struct NewBoxRow {
    /// Optional name.
    pub name: Option<String>,
    /// The snapshot name as the user gave it.
    pub snapshot: Option<String>,
    /// The resolved snapshot and its digest.
    pub snapshot_id: Option<Uuid>,
    /// The resolved snapshot's digest.
    pub snapshot_digest: Option<String>,
    /// vCPUs.
    pub vcpus: i32,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Disk in MiB.
    pub disk_mib: i64,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Runner selector.
    pub runner_selector: BTreeMap<String, String>,
    /// Auto-stop seconds.
    pub auto_stop_seconds: Option<i32>,
    /// Time to live in seconds.
    pub ttl_seconds: Option<i32>,
}

/// How a transition treats the box's `reason`.
#[derive(Debug, Clone, Default)]
pub enum Reason {
    /// Leave it.
    #[default]
    Keep,
    /// Clear it.
    Clear,
    /// Set it.
    Set(String),
}

/// One state write: the new state and what changes with it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The new state (may equal the current one).
    pub to: BoxState,
    /// The reason.
    pub reason: Reason,
    /// The runner: None leaves it; Some(None) takes the box off its runner.
    pub runner: Option<Option<Uuid>>,
    /// Records a boot (started_at, last activity).
    pub started: bool,
    /// Records a stop (stopped_at).
    pub stopped: bool,
    /// A runner state version to record (None leaves it; Some(0) resets it: the next report wins).
    pub observed_version: Option<u64>,
    /// Takes a reservation on the box's runner (only placement, after its capacity check, and a runner's report of
    /// a box it runs do; every other change can only keep or release one).
    pub reserve: bool,
}

impl Change {
    /// A move to `to` that changes nothing else (the reservation follows the state).
    pub fn to(to: BoxState) -> Self {
        Change {
            to,
            reason: Reason::Keep,
            runner: None,
            started: false,
            stopped: false,
            observed_version: None,
            reserve: false,
        }
    }

    /// Sets the reason.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Reason::Set(r.into());
        self
    }

    /// Clears the reason.
    pub fn clear_reason(mut self) -> Self {
        self.reason = Reason::Clear;
        self
    }

    /// Takes the box off its runner.
    pub fn off_runner(mut self) -> Self {
        self.runner = Some(None);
        self
    }

    /// Records a boot.
    pub fn started(mut self) -> Self {
        self.started = true;
        self
    }

    /// Records a stop.
    pub fn stopped(mut self) -> Self {
        self.stopped = true;
        self
    }

    /// Places the box on `runner`.
    pub fn on_runner(mut self, runner: Uuid) -> Self {
        self.runner = Some(Some(runner));
        self
    }

    /// Takes a reservation (when the new state holds one).
    pub fn reserve(mut self) -> Self {
        self.reserve = true;
        self
    }

    /// Records the runner state version the change came from.
    pub fn observed(mut self, version: u64) -> Self {
        self.observed_version = Some(version);
        self
    }
}

/// Loads a box whatever its state (deleted included).
pub async fn load(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Loads a box of `org` that is not deleted.
pub async fn get(db: &PgPool, org: Uuid, id: Uuid) -> Result<Option<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE id = $1 AND org_id = $2 AND deleted_at IS NULL"))
        .bind(id)
        .bind(org)
        .fetch_optional(db)
        .await
}

/// A page of an org's boxes, oldest first, after `after`, at most `limit`.
pub async fn list(
    db: &PgPool,
    org: Uuid,
    after: Option<Uuid>,
    state: Option<BoxState>,
    label: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<BoxRow>, sqlx::Error> {
    let label = label.map(|(k, v)| serde_json::json!({ k: v }));
    sqlx::query_as(sql!(
        "{SELECT_BOX} WHERE org_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2)
            AND ($3::text IS NULL OR state = $3) AND ($4::jsonb IS NULL OR labels @> $4)
          ORDER BY id LIMIT $5"
    ))
    .bind(org)
    .bind(after)
    .bind(state.map(BoxState::as_str))
    .bind(label)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What an org uses in active boxes: (boxes, vCPUs, MiB), `except` left out.
pub async fn active_usage(
    tx: &mut Transaction<'_, Postgres>,
    org: Uuid,
    except: Option<Uuid>,
) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), coalesce(sum(vcpus), 0)::bigint, coalesce(sum(memory_mib), 0)::bigint FROM boxes
          WHERE org_id = $1 AND deleted_at IS NULL AND state IN ('pending', 'starting', 'running', 'stopping')
            AND ($2::uuid IS NULL OR id <> $2)",
    )
    .bind(org)
    .bind(except)
    .fetch_one(&mut **tx)
    .await
}

/// Inserts a `pending` box that should run.
pub async fn insert(tx: &mut Transaction<'_, Postgres>, org: Uuid, nb: &NewBoxRow) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO boxes (id, org_id, name, snapshot, vcpus, memory_mib, disk_mib, env, labels, runner_selector,
                            state, desired_state, auto_stop_seconds, ttl_seconds, snapshot_id, snapshot_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', 'running', $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(org)
    .bind(&nb.name)
    .bind(&nb.snapshot)
    .bind(nb.vcpus)
    .bind(nb.memory_mib)
    .bind(nb.disk_mib)
    .bind(Json(&nb.env))
    .bind(Json(&nb.labels))
    .bind(Json(&nb.runner_selector))
    .bind(nb.auto_stop_seconds)
    .bind(nb.ttl_seconds)
    .bind(nb.snapshot_id)
    .bind(&nb.snapshot_digest)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Writes a state change of `b` if nobody changed the box since `b` was read (its generation) and the edge is
/// legal. Returns the updated row; [`StoreError::Stale`] when someone else changed it first (re-read and decide
/// again), [`StoreError::Illegal`] for an edge the table does not allow. Deleted boxes are not changed.
pub async fn transition(db: impl PgExecutor<'_>, b: &BoxRow, c: Change) -> Result<BoxRow, StoreError> {
    if !b.state.can_become(c.to) {
        return Err(StoreError::Illegal { id: b.id, from: b.state, to: c.to });
    }
    let (set_reason, reason) = match &c.reason {
        Reason::Keep => (false, None),
        Reason::Clear => (true, None),
        Reason::Set(r) => (true, Some(r.as_str())),
    };
    let row: Option<BoxRow> = sqlx::query_as(sql!(
        "UPDATE boxes SET state = $3, reserved = $4 AND (reserved OR $12) AND NOT ($5 AND $6::uuid IS NULL),
                reason = CASE WHEN $7 THEN $8 ELSE reason END,
                runner_id = CASE WHEN $5 THEN $6 ELSE runner_id END,
                started_at = CASE WHEN $9 THEN now() ELSE started_at END,
                last_activity_at = CASE WHEN $9 THEN now() ELSE last_activity_at END,
                stopped_at = CASE WHEN $10 THEN now() ELSE stopped_at END,
                observed_version = coalesce($11, observed_version),
                generation = generation + 1, updated_at = now()
          WHERE id = $1 AND generation = $2 AND deleted_at IS NULL
          RETURNING {}",
        &SELECT_BOX["SELECT ".len()..SELECT_BOX.len() - " FROM boxes".len()]
    ))
    .bind(b.id)
    .bind(b.generation)
    .bind(c.to.as_str())
    .bind(c.to.holds_reservation())
    .bind(c.runner.is_some())
    .bind(c.runner.flatten())
    .bind(set_reason)
    .bind(reason)
    .bind(c.started)
    .bind(c.stopped)
    .bind(c.observed_version.map(|v| v.min(i64::MAX as u64) as i64))
    .bind(c.reserve)
    .fetch_optional(db)
    .await?;
    row.ok_or(StoreError::Stale { id: b.id })
}

/// Records what the user asked for.
pub async fn set_desired(db: impl PgExecutor<'_>, id: Uuid, d: DesiredState) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET desired_state = $2, updated_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(d.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a box: gone from the API at once, its reservation released; its runner destroys it later.
pub async fn mark_deleted(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE boxes SET desired_state = 'deleted', deleted_at = now(), reserved = false,
                generation = generation + 1, updated_at = now()
          WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes a box that never got anywhere (a create that failed as a whole): deleted and destroyed at once.
pub async fn discard(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE boxes SET deleted_at = coalesce(deleted_at, now()), destroyed_at = coalesce(destroyed_at, now()),
                desired_state = 'deleted', reserved = false, generation = generation + 1 WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Records that the box's runner confirmed it gone (or never had it).
pub async fn mark_destroyed(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET destroyed_at = now() WHERE id = $1 AND destroyed_at IS NULL")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deleted boxes of `runner` that its inventory no longer has: gone for good.
pub async fn mark_destroyed_absent(db: &PgPool, runner: Uuid, present: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE boxes SET destroyed_at = now() WHERE runner_id = $1 AND deleted_at IS NOT NULL
            AND destroyed_at IS NULL AND NOT (id = ANY($2))",
    )
    .bind(runner)
    .bind(present)
    .execute(db)
    .await?;
    Ok(())
}

/// Records activity on boxes (postpones their auto-stop).
pub async fn touch(db: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET last_activity_at = now() WHERE id = ANY($1)").bind(ids).execute(db).await?;
    Ok(())
}

/// Boxes with these ids (deleted included).
pub async fn load_many(db: &PgPool, ids: &[Uuid]) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE id = ANY($1)")).bind(ids).fetch_all(db).await
}

/// Boxes placed on `runner`, not deleted, that are not among `present`.
pub async fn placed_on_except(db: &PgPool, runner: Uuid, present: &[Uuid]) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_BOX} WHERE runner_id = $1 AND deleted_at IS NULL AND NOT (id = ANY($2))"))
        .bind(runner)
        .bind(present)
        .fetch_all(db)
        .await
}

/// Placed boxes of `runner` in a state that its disappearance loses.
pub async fn live_on(db: &PgPool, runner: Uuid) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "{SELECT_BOX} WHERE runner_id = $1 AND deleted_at IS NULL AND state IN ('starting', 'running', 'stopping')"
    ))
    .bind(runner)
    .fetch_all(db)
    .await
}

/// Boxes that should run but sit in `pending`/`starting` since before `stale_secs` (their placement was abandoned).
pub async fn abandoned_placements(db: &PgPool, stale_secs: f64) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "{SELECT_BOX} WHERE deleted_at IS NULL AND desired_state = 'running' AND state IN ('pending', 'starting')
           AND updated_at < now() - make_interval(secs => $1) LIMIT 50"
    ))
    .bind(stale_secs)
    .fetch_all(db)
    .await
}

/// Running boxes asked to stop, and idle ones past their auto-stop interval.
pub async fn to_stop(db: &PgPool) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "{SELECT_BOX} b WHERE deleted_at IS NULL AND state = 'running' AND (desired_state = 'stopped' OR
            (auto_stop_seconds IS NOT NULL AND last_activity_at < now() - make_interval(secs => auto_stop_seconds)
             AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.box_id = b.id AND e.state = 'running')))
          LIMIT 50"
    ))
    .fetch_all(db)
    .await
}

/// Boxes past their time to live.
pub async fn expired(db: &PgPool) -> Result<Vec<BoxRow>, sqlx::Error> {
    sqlx::query_as(sql!(
        "{SELECT_BOX} WHERE deleted_at IS NULL AND ttl_seconds IS NOT NULL
           AND created_at < now() - make_interval(secs => ttl_seconds) LIMIT 50"
    ))
    .fetch_all(db)
    .await
}

/// Deleted boxes (for more than 10 s) still on a ready runner: (box, runner).
pub async fn undestroyed(db: &PgPool) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.id, b.runner_id FROM boxes b JOIN runners r ON r.id = b.runner_id
          WHERE b.deleted_at IS NOT NULL AND b.destroyed_at IS NULL AND r.state = 'ready'
            AND b.deleted_at < now() - interval '10 seconds' LIMIT 50",
    )
    .fetch_all(db)
    .await
}

/// Forgets deleted boxes older than `keep_secs` that no runner holds any more.
pub async fn collect(db: &PgPool, keep_secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM boxes b WHERE deleted_at < now() - make_interval(secs => $1)
            AND (destroyed_at IS NOT NULL OR runner_id IS NULL
                 OR EXISTS (SELECT 1 FROM runners r WHERE r.id = b.runner_id AND r.state = 'lost'))",
    )
    .bind(keep_secs)
    .execute(db)
    .await?;
    Ok(())
}

/// Boxes on `runner` that are neither deleted nor lost (they block removing the runner).
pub async fn count_unlost_on(tx: &mut Transaction<'_, Postgres>, runner: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM boxes WHERE runner_id = $1 AND deleted_at IS NULL AND state <> 'lost'")
        .bind(runner)
        .fetch_one(&mut **tx)
        .await
}

/// Takes every box off a runner that is being removed.
pub async fn detach_runner(tx: &mut Transaction<'_, Postgres>, runner: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE boxes SET runner_id = NULL, reserved = false, generation = generation + 1 WHERE runner_id = $1",
    )
    .bind(runner)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Boxes (not deleted) that boot from snapshot `id`.
pub async fn count_using_snapshot(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM boxes WHERE snapshot_id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_one(&mut **tx)
        .await
}

/// Unlinks deleted boxes from a snapshot that is being removed.
pub async fn unlink_snapshot(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE boxes SET snapshot_id = NULL WHERE snapshot_id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}
