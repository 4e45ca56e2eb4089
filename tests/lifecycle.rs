//! Box lifecycle driven by the reconciler: auto-stop after idleness, deletion past the time-to-live, and runner
//! cordon/drain as seen by placement.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn idle_boxes_auto_stop_and_expired_boxes_are_deleted() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let idle = api.create_box(json!({"auto_stop_seconds": 2})).await;
    let busy = api.create_box(json!({"auto_stop_seconds": 2})).await;
    let e = api.exec(&busy, &["sleep", "6"]).await;
    let ttl = api.create_box(json!({"ttl_seconds": 3})).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = api.get(&format!("/v1/boxes/{idle}")).await;
        if b.ok()["state"] == "stopped" {
            assert!(b.body["reason"].as_str().unwrap().contains("auto-stopped"), "{}", b.body);
            break;
        }
        assert!(Instant::now() < deadline, "the idle box was not auto-stopped: {}", b.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A running execution is activity: the busy box keeps running while it runs.
    assert_eq!(api.get(&format!("/v1/boxes/{busy}")).await.ok()["state"], "running");
    let x = api.wait_execution(&busy, &e).await;
    assert_eq!(x["exit_code"], 0, "the execution was cut short: {x}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = api.get(&format!("/v1/boxes/{ttl}")).await;
        if b.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the box outlived its TTL: {}", b.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cordoned_and_drained_runners_take_no_new_boxes() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let b = api.create_box(json!({})).await;
    let rid = s.admin.get("/v1/admin/runners").await.ok()["items"][0]["id"].as_str().unwrap().to_string();
    let r = s.admin.post(&format!("/v1/admin/runners/{rid}/cordon"), json!({})).await;
    assert_eq!(r.ok()["cordoned"], true);
    let refused = api.post("/v1/boxes", json!({})).await;
    refused.err(503, "no_runner_matches");
    assert!(refused.headers.get("retry-after").is_some());
    // Existing boxes keep working; a stopped box may start again on its own runner.
    let e = api.exec(&b, &["true"]).await;
    assert_eq!(api.wait_execution(&b, &e).await["exit_code"], 0);
    api.post(&format!("/v1/boxes/{b}/stop"), json!({})).await.ok();
    assert_eq!(api.post(&format!("/v1/boxes/{b}/start"), json!({})).await.ok()["state"], "running");

    let r = s.admin.post(&format!("/v1/admin/runners/{rid}/drain"), json!({})).await;
    assert_eq!(r.ok()["draining"], true);
    api.post("/v1/boxes", json!({})).await.err(503, "no_runner_matches");
    let r = s.admin.post(&format!("/v1/admin/runners/{rid}/uncordon"), json!({})).await;
    assert_eq!((r.ok()["draining"].clone(), r.body["cordoned"].clone()), (json!(false), json!(false)));
    let b2 = api.create_box(json!({})).await;
    // Non-admins cannot touch runners.
    api.post(&format!("/v1/admin/runners/{rid}/cordon"), json!({})).await.err(403, "forbidden");
    // A runner with boxes cannot be removed; once they are gone it can.
    s.admin.delete(&format!("/v1/admin/runners/{rid}")).await.err(409, "runner_in_use");
    api.delete(&format!("/v1/boxes/{b}")).await;
    api.delete(&format!("/v1/boxes/{b2}")).await;
    assert_eq!(s.admin.delete(&format!("/v1/admin/runners/{rid}")).await.status, 204);
    s.admin.get(&format!("/v1/admin/runners/{rid}")).await.err(404, "not_found");
}
