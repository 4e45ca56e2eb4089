//! The reconciler: one leader among the control-plane replicas (a Postgres session-level advisory lock held on a
//! dedicated connection) periodically drives actual state towards desired state:
//!
//! - runners without heartbeats become `unresponsive`, then `lost`, and so do their boxes (with a reason);
//! - boxes whose placement was abandoned (their replica died) are placed again;
//! - boxes asked to stop, and idle boxes past their auto-stop interval, are stopped;
//! - boxes past their time-to-live are deleted; deleted boxes are destroyed on their runner;
//! - old execution records, deleted boxes and idempotency keys are collected.
//!
//! If the lock's connection breaks (database restart), leadership is given up and re-acquired by whichever replica
//! gets the lock next.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use uuid::Uuid;

use crate::lifecycle::boxes;
use crate::machine::DesiredState;
use crate::state::AppState;
use crate::store::boxes as store;
use crate::store::executions as exec_store;

/// The advisory lock key ("boxyard" reconciler).
const LOCK_KEY: i64 = 0x626f_7879_6172_6401;

/// Runs until `shutdown` turns true.
pub async fn run(st: AppState, database_url: String, mut shutdown: watch::Receiver<bool>) {
    let interval = st.config.reconcile_interval;
    while !*shutdown.borrow() {
        match lead(&st, &database_url, &mut shutdown).await {
            Ok(()) => {}
            Err(e) => tracing::warn!("reconciler: {e}; retrying"),
        }
        st.metrics.reconciler_leader.set(0);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Takes the lock if free and leads until the connection breaks or shutdown.
async fn lead(st: &AppState, url: &str, shutdown: &mut watch::Receiver<bool>) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    loop {
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut conn).await?;
        if got {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(st.config.reconcile_interval) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
    tracing::info!("reconciler: this replica is the leader");
    st.metrics.reconciler_leader.set(1);
    let since = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(st.config.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut conn).await;
            return Ok(());
        }
        // Still holding the lock? (A broken connection means the server already dropped it.)
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        if let Err(e) = pass(st, since.elapsed()).await {
            tracing::warn!("reconciler pass failed: {e}");
        }
        st.metrics.reconciler_passes.inc();
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One reconciliation pass. `leading_for`: how long this replica has led without interruption (runner silence is
/// only counted while a leader watches, so that an outage of the database or of every control plane is not
/// mistaken for runners going silent).
pub async fn pass(st: &AppState, leading_for: Duration) -> Result<(), sqlx::Error> {
    mark_silent_runners(st, leading_for).await?;
    place_abandoned(st).await?;
    stop_idle_and_requested(st).await?;
    delete_expired(st).await?;
    destroy_deleted(st).await?;
    collect(st).await
}

/// A runner's silence counts from its last heartbeat, or from when this leader started watching if later.
async fn mark_silent_runners(st: &AppState, leading_for: Duration) -> Result<(), sqlx::Error> {
    let cfg = &st.config;
    let watched = secs(leading_for);
    sqlx::query(
        "UPDATE runners SET state = 'unresponsive'
          WHERE state = 'ready'
            AND greatest(last_heartbeat_at, now() - make_interval(secs => $2)) < now() - make_interval(secs => $1)",
    )
    .bind(secs(cfg.runner_unresponsive_after))
    .bind(watched)
    .execute(&st.db)
    .await?;
    let lost: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "UPDATE runners SET state = 'lost'
          WHERE state <> 'lost'
            AND greatest(last_heartbeat_at, now() - make_interval(secs => $2)) < now() - make_interval(secs => $1)
          RETURNING id, name, last_heartbeat_at",
    )
    .bind(secs(cfg.runner_lost_after))
    .bind(watched)
    .fetch_all(&st.db)
    .await?;
    for (id, name, last) in lost {
        tracing::warn!(runner = %name, "runner lost: no heartbeat since {last}");
        let reason =
            format!("runner {name} stopped sending heartbeats (last at {})", last.format("%Y-%m-%dT%H:%M:%SZ"));
        for b in store::live_on(&st.db, id).await? {
            if let Err(e) = boxes::lose(st, &b, &reason).await {
                tracing::warn!(box_id = %b.id, "cannot mark the box lost (next pass retries): {e}");
            }
        }
    }
    Ok(())
}

/// Placements whose replica died half way. A box that never ran is placed again from scratch; a stopped box that
/// was being started again goes back to `stopped` on its runner (its disk is there; the user may start it again).
async fn place_abandoned(st: &AppState) -> Result<(), sqlx::Error> {
    for b in store::abandoned_placements(&st.db, secs(st.config.placement_stale_after)).await? {
        if let Err(e) = boxes::recover_abandoned(st, &b).await {
            tracing::info!(box_id = %b.id, "recovery of an abandoned placement deferred: {e}");
        }
    }
    Ok(())
}

/// Boxes asked to stop, and idle boxes past their auto-stop interval.
async fn stop_idle_and_requested(st: &AppState) -> Result<(), sqlx::Error> {
    for b in store::to_stop(&st.db).await? {
        let auto = b.desired_state == DesiredState::Running;
        let why = if auto {
            format!("auto-stopped after {} s without activity", b.auto_stop_seconds.unwrap_or_default())
        } else {
            "stopped on request".to_string()
        };
        if auto {
            store::set_desired(&st.db, b.id, DesiredState::Stopped).await?;
        }
        if let Err(e) = boxes::stop_on_runner(st, &b, &why).await {
            tracing::info!(box_id = %b.id, "stop deferred: {e}");
        }
    }
    Ok(())
}

async fn delete_expired(st: &AppState) -> Result<(), sqlx::Error> {
    for b in store::expired(&st.db).await? {
        tracing::info!(box_id = %b.id, "deleting a box past its time-to-live");
        if let Err(e) = boxes::delete(st, &b).await {
            tracing::info!(box_id = %b.id, "delete deferred: {e}");
        }
    }
    Ok(())
}

/// Deleted boxes still on a reachable runner.
async fn destroy_deleted(st: &AppState) -> Result<(), sqlx::Error> {
    for (b, r) in store::undestroyed(&st.db).await? {
        crate::lifecycle::destroy_on_runner(st, b, r).await;
    }
    Ok(())
}

/// Old execution records, deleted boxes and idempotency keys.
async fn collect(st: &AppState) -> Result<(), sqlx::Error> {
    let cfg = &st.config;
    let keep = secs(cfg.record_retention);
    exec_store::collect(&st.db, keep).await?;
    store::collect(&st.db, keep).await?;
    // Checks of registered objects whose replica died: they would stay `verifying` forever.
    sqlx::query(
        "UPDATE snapshots SET state = 'failed', reason = 'the check of the object was interrupted; register it again',
                updated_at = now() WHERE state = 'verifying' AND updated_at < now() - interval '1 hour'",
    )
    .execute(&st.db)
    .await?;
    crate::store::idempotency::collect(&st.db, secs(cfg.idempotency_ttl)).await?;
    Ok(())
}
