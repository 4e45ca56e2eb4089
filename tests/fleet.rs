//! The fleet: runners that die or come back, several control-plane replicas on one database, and the database
//! restarting under load. Real Postgres, real control-plane and runner processes.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::{Value, json};

async fn runner_ids(admin: &Api) -> Vec<(String, String)> {
    let r = admin.get("/v1/admin/runners").await;
    r.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap().to_string(), x["id"].as_str().unwrap().to_string()))
        .collect()
}

async fn wait_box(api: &Api, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let b = api.get(&format!("/v1/boxes/{id}")).await;
        if b.ok()["state"] == state {
            return b.body;
        }
        assert!(Instant::now() < deadline, "box {id} not {state} within {within:?}: {}", b.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runner_loses_its_boxes_with_a_reason_and_new_boxes_go_elsewhere() {
    let mut s = Stack::start(&[("r1", 4), ("r2", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let ids = runner_ids(&s.admin).await;
    let b = api.create_box(json!({})).await;
    let e = api.exec(&b, &["sleep", "600"]).await;
    let on = api.get(&format!("/v1/boxes/{b}")).await.ok()["runner_id"].as_str().unwrap().to_string();
    let victim = ids.iter().find(|(_, id)| *id == on).unwrap().0.clone();
    let (survivor_name, survivor) = ids.iter().find(|(_, id)| *id != on).unwrap().clone();

    let killed = Instant::now();
    s.runners.iter_mut().find(|r| r.name == victim).unwrap().kill_host();
    let lost = wait_box(&api, &b, "lost", Duration::from_secs(60)).await;
    eprintln!("box lost {:?} after the runner died", killed.elapsed());
    let reason = lost["reason"].as_str().unwrap();
    assert!(reason.contains(&victim) && reason.contains("heartbeat"), "reason: {reason}");
    let x = api.get(&format!("/v1/boxes/{b}/executions/{e}")).await;
    assert_eq!(x.ok()["state"], "lost");
    assert!(x.body["error"].as_str().unwrap().contains(&victim));
    let runners = s.admin.get("/v1/admin/runners").await;
    let v = runners.ok()["items"].as_array().unwrap().iter().find(|r| r["name"] == victim.as_str()).unwrap().clone();
    assert_eq!(v["state"], "lost");

    for _ in 0..3 {
        let nb = api.create_box(json!({})).await;
        let got = api.get(&format!("/v1/boxes/{nb}")).await;
        assert_eq!(
            got.ok()["runner_id"],
            survivor.as_str(),
            "a new box went to {} instead of {survivor_name}",
            got.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_returning_runner_gets_its_boxes_back_and_destroys_deleted_ones() {
    let mut s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let keep = api.create_box(json!({})).await;
    let gone = api.create_box(json!({})).await;
    // The runner process dies; its boxes (local agents) live on, as VMs do.
    s.runners[0].kill9();
    wait_box(&api, &keep, "lost", Duration::from_secs(60)).await;
    assert_eq!(api.delete(&format!("/v1/boxes/{gone}")).await.status, 204);

    s.runners[0].spawn();
    let back = wait_box(&api, &keep, "running", Duration::from_secs(30)).await;
    assert!(back["reason"].as_str().unwrap().contains("came back"), "{back}");
    let e = api.exec(&keep, &["echo", "still here"]).await;
    assert_eq!(api.wait_execution(&keep, &e).await["exit_code"], 0);
    // The deleted box is destroyed on the runner: its inventory shrinks to one box.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.admin.get("/v1/admin/runners").await;
        if r.ok()["items"][0]["boxes"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the deleted box is still on the runner: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_overbook_a_runner_and_elect_one_reconciler() {
    let pg = Pg::start();
    let cp1 = Cp::start(&pg, &[]);
    let mut cp2 = Cp::start(&pg, &[]);
    let admin1 = cp1.admin();
    let token = admin1.join_token().await;
    let _r = Runner::start(&cp2, "r1", &token, 4, "64GiB", &[]);
    admin1.wait_runners(1).await;
    let (_, api1) = admin1.org("alpha").await;
    let api2 = Api::new(&cp2.api, &api1.key);

    let mut tasks = Vec::new();
    for i in 0..12 {
        let api = if i % 2 == 0 { api1.clone() } else { api2.clone() };
        tasks.push(tokio::spawn(async move { api.post("/v1/boxes", json!({"vcpus": 1, "memory_mib": 128})).await }));
    }
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created += 1,
            503 => assert_eq!(r.body["code"], "no_capacity", "{}", r.body),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(created, 4, "a 4-vCPU runner took {created} 1-vCPU boxes");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin1.get("/v1/admin/runners").await;
        let it = &r.ok()["items"][0];
        assert_eq!(it["allocated_vcpus"], 4);
        if it["boxes"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the runner does not report 4 boxes: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Exactly one leader; when it dies the other takes over.
    let leaders = |a: &str, b: &str| {
        (
            metric(a, "boxyard_reconciler_leader").unwrap_or(0.0) as i32,
            metric(b, "boxyard_reconciler_leader").unwrap_or(0.0) as i32,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (l1, l2) = loop {
        let (l1, l2) = leaders(&metrics(&cp1).await, &metrics(&cp2).await);
        if l1 + l2 == 1 {
            break (l1, l2);
        }
        assert!(l1 + l2 <= 1, "two reconciler leaders");
        assert!(Instant::now() < deadline, "no reconciler leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for _ in 0..10 {
        let (a, b) = leaders(&metrics(&cp1).await, &metrics(&cp2).await);
        assert_eq!((a, b), (l1, l2), "leadership moved or doubled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if l2 == 1 {
        cp2.kill9();
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&metrics(&cp1).await, "boxyard_reconciler_leader") != Some(1.0) {
            assert!(Instant::now() < deadline, "the surviving replica did not take over the reconciler");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        drop(cp1);
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&metrics(&cp2).await, "boxyard_reconciler_leader") != Some(1.0) {
            assert!(Instant::now() < deadline, "the surviving replica did not take over the reconciler");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_control_plane_rides_out_a_database_restart_under_load() {
    let s = Stack::start(&[("r1", 8)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let b = api.create_box(json!({})).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let api = api.clone();
        let stop = stop.clone();
        let b = b.clone();
        tokio::spawn(async move {
            let mut statuses: Vec<(u16, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = api.get("/v1/boxes").await;
                statuses.push((r.status, r.body["code"].as_str().unwrap_or("").to_string()));
                let r = api.post(&format!("/v1/boxes/{b}/executions"), json!({"command": ["true"]})).await;
                statuses.push((r.status, r.body["code"].as_str().unwrap_or("").to_string()));
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.pg.down();
    tokio::time::sleep(Duration::from_secs(8)).await;
    s.pg.up();
    // Requests succeed again without restarting the control plane.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get("/v1/boxes").await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still failing after the database came back: {} {}", r.status, r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.await.unwrap();
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s >= 400).collect();
    assert!(!failed.is_empty(), "the outage was not seen at all");
    for (s, code) in &failed {
        assert_eq!((*s, code.as_str()), (503, "database_unavailable"), "during the outage");
    }
    assert!(statuses.last().unwrap().0 < 300, "the load did not recover: {:?}", statuses.last());
    // The runner was not declared lost for the database's silence, and the box still works.
    let e = api.exec(&b, &["echo", "after"]).await;
    assert_eq!(api.wait_execution(&b, &e).await["exit_code"], 0);
    assert_eq!(api.get(&format!("/v1/boxes/{b}")).await.ok()["state"], "running");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&metrics(&s.cp).await, "boxyard_reconciler_leader") != Some(1.0) {
        assert!(Instant::now() < deadline, "the reconciler did not regain leadership");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_runner_serves_only_the_control_plane_it_joined() {
    use boxyard_proto::runner::ListBoxesRequest;
    use boxyard_proto::runner::runner_client::RunnerClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let s = Stack::start(&[("r1", 2)]).await;
    let state = &s.runners[0].state;
    let addr: String = serde_json::from_slice(&std::fs::read(state.join("runner.addr")).unwrap()).unwrap();
    let ca = std::fs::read(state.join("tls/dev-cert.pem")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    let ch =
        Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut c = RunnerClient::new(ch);
    let err = c.list_boxes(ListBoxesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut req = tonic::Request::new(ListBoxesRequest {});
    req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(c.list_boxes(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let mut req = tonic::Request::new(ListBoxesRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    c.list_boxes(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_needs_a_valid_join_token() {
    let pg = Pg::start();
    let cp = Cp::start(&pg, &[]);
    let admin = cp.admin();
    let token = admin.join_token().await;
    // A revoked token no longer registers anyone.
    let list = admin.get("/v1/admin/join-tokens").await;
    let tid = list.ok()["items"][0]["id"].as_str().unwrap().to_string();
    admin.delete(&format!("/v1/admin/join-tokens/{tid}")).await.ok();
    let tmp = tempfile::tempdir().unwrap();
    let mut out = std::process::Command::new(bin("boxyard-runner"))
        .args(["serve", "--backend", "local", "--listen", "127.0.0.1:0", "--tls-dev", "--name", "bad"])
        .arg("--state-dir")
        .arg(tmp.path())
        .args(["--controlplane", &cp.registry, "--join-token", &token])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = out.kill();
            panic!("the runner kept running with a revoked join token");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = out.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("join token is invalid, expired or revoked"), "{err}");
    assert!(admin.get("/v1/admin/runners").await.ok()["items"].as_array().unwrap().is_empty());
}
