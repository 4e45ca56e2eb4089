//! The scheduler's reservation against a real Postgres: many concurrent placements on one runner never exceed
//! its capacity, and filtering/scoring pick the right runners.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use boxyard_controlplane::config::{Config, Quota};
use boxyard_controlplane::scheduler::{self, Demand, ScheduleError};
use boxyard_controlplane::store::boxes::BoxRow;
use boxyard_controlplane::{db, state::AppState};
use boxyard_devstack::postgres::TempCluster;
use serde_json::json;
use uuid::Uuid;

/// A throwaway Postgres cluster (boxyard-devstack), removed on drop.
type Pg = TempCluster;

async fn setup(pg: &Pg) -> sqlx::PgPool {
    let pool = db::connect(&pg.url(), 60, std::time::Duration::from_secs(10)).await.unwrap();
    db::migrate(&pool).await.unwrap();
    pool
}

async fn runner(pool: &sqlx::PgPool, name: &str, vcpus: i32, mem: i64, labels: serde_json::Value) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO runners (id, name, address, tls_server_name, tls_ca_pem, api_token, credential_hash, labels,
                capacity_vcpus, capacity_memory_mib, capacity_disk_mib, state)
         VALUES ($1, $2, 'x:1', 'x', 'x', 'x', '\\x00', $3, $4, $5, 100000, 'ready')",
    )
    .bind(id)
    .bind(name)
    .bind(labels)
    .bind(vcpus)
    .bind(mem)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn pending_box(pool: &sqlx::PgPool, org: Uuid, vcpus: i32) -> BoxRow {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO boxes (id, org_id, vcpus, memory_mib, disk_mib, state, desired_state)
         VALUES ($1, $2, $3, 256, 1024, 'pending', 'running')",
    )
    .bind(id)
    .bind(org)
    .bind(vcpus)
    .execute(pool)
    .await
    .unwrap();
    boxyard_controlplane::store::boxes::load(pool, id).await.unwrap().unwrap()
}

fn demand(vcpus: i32) -> Demand {
    Demand { vcpus, memory_mib: 256, selector: json!({}), snapshot: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_reservations_never_exceed_capacity() {
    let pg = Pg::start().unwrap_or_else(|e| panic!("{e}"));
    let pool = setup(&pg).await;
    let mut tx = pool.begin().await.unwrap();
    let org = db::create_org(&mut tx, "o", &Quota::default()).await.unwrap();
    tx.commit().await.unwrap();
    let r = runner(&pool, "r", 10, 1 << 20, json!({})).await;
    let cfg = Config::default();
    let mut boxes = Vec::new();
    for _ in 0..60 {
        boxes.push(pending_box(&pool, org, 1).await);
    }
    let mut tasks = Vec::new();
    for b in boxes {
        let (pool, cfg) = (pool.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            scheduler::reserve(&pool, &cfg, &b, r, &demand(1), false).await.unwrap().is_some()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap() as i32;
    }
    assert_eq!(ok, 10, "{ok} reservations on a 10-vCPU runner");
    let used: i64 = sqlx::query_scalar("SELECT sum(vcpus)::bigint FROM boxes WHERE runner_id = $1 AND reserved")
        .bind(r)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(used, 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn filtering_and_scoring() {
    let pg = Pg::start().unwrap_or_else(|e| panic!("{e}"));
    let pool = setup(&pg).await;
    let st = AppState::new(pool.clone(), Config::default());
    let mut tx = pool.begin().await.unwrap();
    let org = db::create_org(&mut tx, "o", &Quota::default()).await.unwrap();
    tx.commit().await.unwrap();
    let gpu = runner(&pool, "gpu", 4, 8192, json!({"gpu": "yes", "zone": "a"})).await;
    let small = runner(&pool, "small", 2, 8192, json!({"zone": "a"})).await;
    let big = runner(&pool, "big", 16, 65536, json!({"zone": "b"})).await;
    let cfg = &st.config;

    // Labels filter.
    let d = Demand { selector: json!({"gpu": "yes"}), ..demand(1) };
    let c = scheduler::candidates(&pool, cfg, &d, &[]).await.unwrap();
    assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![gpu]);
    let d = Demand { selector: json!({"zone": "nowhere"}), ..demand(1) };
    assert!(matches!(scheduler::candidates(&pool, cfg, &d, &[]).await, Err(ScheduleError::NoRunnerMatches(_))));
    // Capacity filter and the most free runner first (gpu is half used).
    let used = pending_box(&pool, org, 2).await;
    assert!(scheduler::reserve(&pool, cfg, &used, gpu, &demand(2), false).await.unwrap().is_some());
    let c = scheduler::candidates(&pool, cfg, &demand(3), &[]).await.unwrap();
    assert_eq!(c[0].id, big);
    assert!(!c.iter().any(|c| c.id == small));
    assert!(matches!(scheduler::candidates(&pool, cfg, &demand(17), &[]).await, Err(ScheduleError::NoCapacity { .. })));
    // Cordoned runners take nothing new.
    sqlx::query("UPDATE runners SET cordoned = true WHERE id = $1").bind(big).execute(&pool).await.unwrap();
    let c = scheduler::candidates(&pool, cfg, &demand(1), &[]).await.unwrap();
    assert!(!c.iter().any(|c| c.id == big));
    let b = pending_box(&pool, org, 1).await;
    assert!(scheduler::reserve(&pool, cfg, &b, big, &demand(1), false).await.unwrap().is_none());
    // Boxes that boot from a snapshot go only to runners with a snapshot store.
    let snap = Demand { snapshot: Some(format!("sha256:{}", "a".repeat(64))), ..demand(1) };
    assert!(matches!(scheduler::candidates(&pool, cfg, &snap, &[]).await, Err(ScheduleError::NoRunnerMatches(_))));
    sqlx::query("UPDATE runners SET snapshots_enabled = true WHERE id = $1").bind(small).execute(&pool).await.unwrap();
    let c = scheduler::candidates(&pool, cfg, &snap, &[]).await.unwrap();
    assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![small]);
    // Excluded (already tried) runners are skipped.
    let c = scheduler::candidates(&pool, cfg, &demand(1), &[gpu]).await.unwrap();
    assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![small]);
}

/// `runner_usage` (kept by a trigger, read to rank runners) equals the sum over each runner's reserved boxes
/// after reservations, releases, state changes, moves and deletes.
#[tokio::test(flavor = "multi_thread")]
async fn runner_usage_always_equals_the_sum_over_reserved_boxes() {
    let pg = Pg::start().unwrap_or_else(|e| panic!("{e}"));
    let pool = setup(&pg).await;
    let mut tx = pool.begin().await.unwrap();
    let org = db::create_org(&mut tx, "o", &Quota::default()).await.unwrap();
    tx.commit().await.unwrap();
    let r1 = runner(&pool, "r1", 64, 1 << 20, json!({})).await;
    let r2 = runner(&pool, "r2", 64, 1 << 20, json!({})).await;
    let cfg = Config::default();
    let mut boxes = Vec::new();
    for i in 0..30 {
        let b = pending_box(&pool, org, 1 + i % 3).await;
        let on = if i % 2 == 0 { r1 } else { r2 };
        boxes.push(scheduler::reserve(&pool, &cfg, &b, on, &demand(b.vcpus), false).await.unwrap().unwrap());
    }
    let check = |what: &'static str| {
        let pool = pool.clone();
        async move {
            let diff: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
                "SELECT r.id, coalesce(u.vcpus, 0) - coalesce(s.vcpus, 0), coalesce(u.starting, 0) - coalesce(s.starting, 0)
                   FROM runners r LEFT JOIN runner_usage u ON u.runner_id = r.id
                   LEFT JOIN (SELECT runner_id, sum(vcpus)::bigint AS vcpus,
                                     count(*) FILTER (WHERE state IN ('pending', 'starting')) AS starting
                                FROM boxes WHERE reserved GROUP BY runner_id) s ON s.runner_id = r.id
                  WHERE coalesce(u.vcpus, 0) <> coalesce(s.vcpus, 0) OR coalesce(u.memory_mib, 0) <> (
                        SELECT coalesce(sum(memory_mib), 0) FROM boxes WHERE reserved AND runner_id = r.id)
                     OR coalesce(u.starting, 0) <> coalesce(s.starting, 0)",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(diff.is_empty(), "{what}: runner_usage differs from the boxes: {diff:?}");
        }
    };
    check("after reserving").await;
    // Some boot (starting -> running), some stop (reservation released), some move, some are deleted.
    for (i, b) in boxes.iter().enumerate() {
        let q = match i % 4 {
            0 => "UPDATE boxes SET state = 'running' WHERE id = $1",
            1 => "UPDATE boxes SET state = 'stopped', reserved = false WHERE id = $1",
            2 => "UPDATE boxes SET runner_id = (SELECT id FROM runners WHERE name = 'r1') WHERE id = $1",
            _ => "DELETE FROM boxes WHERE id = $1",
        };
        sqlx::query(q).bind(b.id).execute(&pool).await.unwrap();
    }
    check("after changes").await;
    sqlx::query("UPDATE boxes SET vcpus = vcpus + 1, memory_mib = memory_mib * 2").execute(&pool).await.unwrap();
    check("after resizing").await;
}
