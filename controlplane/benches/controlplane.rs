//! Control-plane benchmarks. They print numbers; nothing here passes or fails.
//!
//! 1. Scheduler placements per second with 1,000 runners in the database (filter, score, reserve under the runner
//!    row lock), at 1 and 8 concurrent placements.
//! 2. Create → running latency through the API gateway versus a direct CreateBox call to the runner (local backend),
//!    i.e. the overhead of the control plane.
//! 3. Create → running from a snapshot that is not cached on the runner yet, and from a cached one (embedded S3;
//!    BOXYARD_BENCH_SNAPSHOT_MIB, default 256).
//!
//! Run: `cargo build --release --workspace && cargo bench -p boxyard-controlplane` (the bench starts its own Postgres
//! cluster, control plane and runner from target/release); `-- scheduler`, `-- overhead` or `-- snapshot` run one.

#![allow(clippy::unwrap_used)] // A benchmark: a failure ends it with its location.

// The whole-system tests' harness: the same stack (boxyard-devstack) and API client.
#[path = "../../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use boxyard_controlplane::config::{Config, Quota};
use boxyard_controlplane::{db, scheduler};
use boxyard_proto::runner as pb;
use harness::*;
use serde_json::json;
use uuid::Uuid;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn bench_scheduler() {
    let pg = Pg::start();
    let pool = db::connect(&pg.url(), 16, Duration::from_secs(10)).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let org = db::create_org(&mut tx, "bench", &Quota::default()).await.unwrap();
    for i in 0..1000 {
        let zone = if i % 2 == 0 { "a" } else { "b" };
        sqlx::query(
            "INSERT INTO runners (id, name, address, tls_server_name, tls_ca_pem, api_token, credential_hash, labels,
                    capacity_vcpus, capacity_memory_mib, capacity_disk_mib, state)
             VALUES ($1, $2, 'x:1', 'x', 'x', 'x', '\\x00', $3, $4, $5, 1000000, 'ready')",
        )
        .bind(Uuid::now_v7())
        .bind(format!("bench-{i}"))
        .bind(json!({"zone": zone}))
        .bind(16 + (i % 4) * 16)
        .bind(65536i64 + (i as i64 % 4) * 65536)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let cfg = Config::default();
    println!("scheduler: 1000 runners in Postgres");
    for concurrency in [1usize, 8] {
        let n = 2000usize;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO boxes (id, org_id, vcpus, memory_mib, disk_mib, state, desired_state)
                 VALUES ($1, $2, 1, 512, 1024, 'pending', 'running')",
            )
            .bind(id)
            .bind(org)
            .execute(&pool)
            .await
            .unwrap();
            ids.push(boxyard_controlplane::store::boxes::load(&pool, id).await.unwrap().unwrap());
        }
        let chunks: Vec<Vec<_>> = ids.chunks(n / concurrency).map(|c| c.to_vec()).collect();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let (pool, cfg) = (pool.clone(), cfg.clone());
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut filter_score) = (Vec::new(), Vec::new());
                let d = scheduler::Demand { vcpus: 1, memory_mib: 512, selector: json!({"zone": "a"}), snapshot: None };
                for b in chunk {
                    let t = Instant::now();
                    let cands = scheduler::candidates(&pool, &cfg, &d, &[]).await.unwrap();
                    filter_score.push(t.elapsed());
                    let mut placed = false;
                    for c in cands {
                        if scheduler::reserve(&pool, &cfg, &b, c.id, &d, false).await.unwrap().is_some() {
                            placed = true;
                            break;
                        }
                    }
                    assert!(placed);
                    lat.push(t.elapsed());
                }
                (lat, filter_score)
            }));
        }
        let (mut lat, mut fs) = (Vec::new(), Vec::new());
        for t in tasks {
            let (l, f) = t.await.unwrap();
            lat.extend(l);
            fs.extend(f);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  concurrency {concurrency}: {n} placements in {secs:.2} s = {:.0} placements/s (p50 {:.1} ms, p99 {:.1} ms)",
            n as f64 / secs,
            pct(&mut lat, 0.5).as_secs_f64() * 1e3,
            pct(&mut lat, 0.99).as_secs_f64() * 1e3
        );
        println!("    of which filter + score (candidates): p50 {:.1} ms", pct(&mut fs, 0.5).as_secs_f64() * 1e3);
        sqlx::query("UPDATE boxes SET reserved = false, runner_id = NULL, deleted_at = now()")
            .execute(&pool)
            .await
            .unwrap();
    }
}

async fn bench_overhead() {
    let s = Stack::start(&[("r1", 64)]).await;
    let (_, api) = s.admin.org("bench").await;
    let state = &s.runners[0].state;
    let addr: String = serde_json::from_slice(&std::fs::read(state.join("runner.addr")).unwrap()).unwrap();
    let ca = std::fs::read(state.join("tls/dev-cert.pem")).unwrap();
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut runner = pb::runner_client::RunnerClient::new(ch);
    let auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", token.trim()).parse().unwrap();
    fn req<T>(m: T, auth: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut().insert("authorization", auth.clone());
        r
    }
    let rounds = 30;
    let (mut via_api, mut direct) = (Vec::new(), Vec::new());
    for i in 0..rounds + 3 {
        let t = Instant::now();
        let id = api.create_box(json!({})).await;
        let a = t.elapsed();
        api.delete(&format!("/v1/boxes/{id}")).await;
        let bid = format!("direct-{i}");
        let t = Instant::now();
        let info =
            runner.create_box(req(pb::CreateBoxRequest { box_id: bid.clone(), spec: None }, &auth)).await.unwrap();
        let d = t.elapsed();
        assert_eq!(info.get_ref().state(), pb::BoxState::Running);
        runner.destroy_box(req(pb::BoxRef { box_id: bid }, &auth)).await.unwrap();
        if i >= 3 {
            via_api.push(a);
            direct.push(d);
        }
    }
    let (a50, d50) = (pct(&mut via_api, 0.5), pct(&mut direct, 0.5));
    let (a90, d90) = (pct(&mut via_api, 0.9), pct(&mut direct, 0.9));
    println!("create → running, local backend, {rounds} rounds:");
    println!("  through the API gateway: p50 {:.1} ms, p90 {:.1} ms", a50.as_secs_f64() * 1e3, a90.as_secs_f64() * 1e3);
    println!("  direct runner CreateBox: p50 {:.1} ms, p90 {:.1} ms", d50.as_secs_f64() * 1e3, d90.as_secs_f64() * 1e3);
    println!("  control-plane overhead:  p50 {:.1} ms", (a50.as_secs_f64() - d50.as_secs_f64()) * 1e3);
}

async fn bench_snapshot_create() {
    let mib: usize = std::env::var("BOXYARD_BENCH_SNAPSHOT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 64)], &[]).await;
    let (_, api) = s.admin.org("bench").await;
    let d = tempfile::tempdir().unwrap();
    let img = tiny_image(d.path(), "bench", mib << 20);
    let size = std::fs::metadata(&img).unwrap().len();
    api.snapshot("bench", &img, json!({})).await;
    let t = Instant::now();
    let b1 = api.create_box(json!({"snapshot": "bench"})).await;
    let uncached = t.elapsed();
    let t = Instant::now();
    let b2 = api.create_box(json!({"snapshot": "bench"})).await;
    let cached = t.elapsed();
    println!("create → running from a snapshot of {} MiB (local backend: fetch and verify, no boot):", size >> 20);
    println!("  uncached (parallel ranged GETs + sha256 + publish): {:.2} s", uncached.as_secs_f64());
    println!("  cached:                                              {:.3} s", cached.as_secs_f64());
    for b in [b1, b2] {
        api.delete(&format!("/v1/boxes/{b}")).await;
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: skip the work then.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // Names after `--` pick benchmarks (`cargo bench -p boxyard-controlplane -- scheduler`); none: all of them.
    let picked: Vec<&str> = args.iter().filter(|a| !a.starts_with('-')).map(String::as_str).collect();
    let run = |name: &str| picked.is_empty() || picked.contains(&name);
    if run("scheduler") {
        bench_scheduler().await;
    }
    if run("overhead") {
        bench_overhead().await;
    }
    if run("snapshot") {
        bench_snapshot_create().await;
    }
}
