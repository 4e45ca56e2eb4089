//! A hung runner does not hang the API: with the runner process frozen (SIGSTOP, as a hung host would be), every
//! endpoint that needs it answers within its deadline — reads from the stored record (marked stale), writes with
//! 503 runner_unavailable and retry_after — and the runner picks up where it was once it thaws.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

/// The deadline the control plane is given for runner calls, and the slack a loaded test machine gets on top.
const DEADLINE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_runner_gets_every_endpoint_an_answer_within_its_deadline() {
    let pg = Pg::start();
    // Long silence limits: the runner must stay `ready` (not lost) while frozen, so that the calls are really made.
    let cp = Cp::start(
        &pg,
        &[
            "--runner-call-timeout",
            "2s",
            "--create-timeout",
            "2s",
            "--stop-timeout",
            "2s",
            "--runner-unresponsive-after",
            "60s",
            "--runner-lost-after",
            "120s",
        ],
    );
    let admin = cp.admin();
    let token = admin.join_token().await;
    let runner = Runner::start(&cp, "r1", &token, 8, "8GiB", &[]);
    admin.wait_runners(1).await;
    let (_, api) = admin.org("frozen").await;
    let b = api.create_box(json!({})).await;
    let victim = api.create_box(json!({})).await;
    let stopped = api.create_box(json!({})).await;
    let x = api.exec(&b, &["sh", "-c", "echo before; sleep 600"]).await;

    runner.signal(libc::SIGSTOP);
    let timed = |name: &'static str, f: futures::future::BoxFuture<'static, Resp>| async move {
        let t = Instant::now();
        let r = tokio::time::timeout(DEADLINE + SLACK + Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{name}: no answer at all"));
        (name, t.elapsed(), r)
    };
    let ex = format!("/v1/boxes/{b}/executions/{x}");
    let calls: Vec<(&'static str, futures::future::BoxFuture<'static, Resp>)> = vec![
        (
            "get execution",
            Box::pin({
                let (api, p) = (api.clone(), ex.clone());
                async move { api.get(&p).await }
            }),
        ),
        (
            "create execution",
            Box::pin({
                let (api, p) = (api.clone(), format!("/v1/boxes/{b}/executions"));
                async move { api.post(&p, json!({"command": ["true"]})).await }
            }),
        ),
        (
            "kill",
            Box::pin({
                let (api, p) = (api.clone(), format!("{ex}/kill"));
                async move { api.post(&p, json!({})).await }
            }),
        ),
        (
            "signal",
            Box::pin({
                let (api, p) = (api.clone(), format!("{ex}/signal"));
                async move { api.post(&p, json!({"signal": "TERM"})).await }
            }),
        ),
        (
            "resize",
            Box::pin({
                let (api, p) = (api.clone(), format!("{ex}/resize"));
                async move { api.post(&p, json!({"rows": 10, "cols": 10})).await }
            }),
        ),
        (
            "download",
            Box::pin({
                let (api, p) = (api.clone(), format!("/v1/boxes/{b}/files?path=/etc/hostname"));
                async move { api.get(&p).await }
            }),
        ),
        (
            "upload",
            Box::pin({
                let (api, p) = (api.clone(), format!("/v1/boxes/{b}/files?path=/tmp"));
                async move { api.raw("PUT", &p, tar_of("f.txt", b"hello"), "application/x-tar").await }
            }),
        ),
        (
            "attach",
            Box::pin({
                let (api, p) = (api.clone(), format!("{ex}/attach?cursor=0"));
                // A WebSocket upgrade request: the gateway opens the runner stream before it upgrades.
                async move {
                    api.send(
                        "GET",
                        &p,
                        None,
                        &[
                            ("connection", "upgrade"),
                            ("upgrade", "websocket"),
                            ("sec-websocket-version", "13"),
                            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                        ],
                    )
                    .await
                }
            }),
        ),
        (
            "stop",
            Box::pin({
                let (api, p) = (api.clone(), format!("/v1/boxes/{stopped}/stop"));
                async move { api.post(&p, json!({})).await }
            }),
        ),
        (
            "create box",
            Box::pin({
                let api = api.clone();
                async move { api.post("/v1/boxes", json!({})).await }
            }),
        ),
        (
            "delete box",
            Box::pin({
                let (api, p) = (api.clone(), format!("/v1/boxes/{victim}"));
                async move { api.delete(&p).await }
            }),
        ),
    ];
    let results = futures::future::join_all(calls.into_iter().map(|(n, f)| timed(n, f))).await;
    let mut failures = Vec::new();
    for (name, took, r) in &results {
        // Each answers within the deadline of the one runner call it makes (create: placement's one attempt).
        if *took > DEADLINE + SLACK {
            failures.push(format!("{name}: answered after {took:?}"));
        }
        let ok = match *name {
            "get execution" => {
                r.status == 200
                    && r.headers.get("x-boxyard-stale").is_some()
                    && r.body["state"] == "running"
                    && r.body["id"] == x.as_str()
            }
            "delete box" => r.status == 204,
            _ => {
                r.status == 503
                    && r.body["code"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("runner_unavailable") || c == "no_capacity")
                    && r.body["retry_after"].as_u64().is_some_and(|s| s > 0)
                    && r.headers.get("retry-after").is_some()
            }
        };
        if !ok {
            failures.push(format!("{name}: {} {} (in {took:?})", r.status, r.body));
        }
    }
    // Reads that need no runner answer at once.
    let t = Instant::now();
    assert_eq!(api.get(&format!("/v1/boxes/{b}")).await.status, 200);
    assert_eq!(api.get("/v1/boxes").await.status, 200);
    assert!(t.elapsed() < SLACK, "box reads took {:?}", t.elapsed());

    runner.signal(libc::SIGCONT);
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), runner.log());
    // The stop that timed out left the box running (not stuck in stopping), so the reconciler stops it now.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get(&format!("/v1/boxes/{stopped}")).await;
        if r.ok()["state"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "the box whose stop timed out never stopped: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once thawed the execution is still there and running, with its output.
    let r = api.get(&ex).await;
    assert_eq!(r.ok()["state"], "running", "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get(&ex).await;
        if r.headers.get("x-boxyard-stale").is_none() && r.body["output_bytes"].as_u64() >= Some(7) {
            break;
        }
        assert!(Instant::now() < deadline, "the thawed runner did not answer: {}", r.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}
