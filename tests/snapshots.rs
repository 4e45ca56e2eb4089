//! Snapshots end to end against the embedded S3 endpoint (reached through mountpoint-s3-client by the control plane
//! and the runners): upload → active, boxes boot from them with their defaults, corrupt objects are refused, one
//! download per image, eviction keeps images in use, org isolation, interrupted uploads, registration by key.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_snapshot_boots_boxes_with_its_defaults() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    let img = tiny_image(d.path(), "tiny", 100_000);
    let snap = api
        .snapshot("tiny", &img, json!({"cmd": ["sh", "-c", "echo default $FROM_SNAP $BOXV"], "env": {"FROM_SNAP": "yes", "BOXV": "snap"}, "working_dir": "/tmp"}))
        .await;
    let digest = boxyard_snapshot::digest_file(&img).unwrap();
    assert_eq!(snap["digest"], digest.as_str());
    assert_eq!(snap["size_bytes"], std::fs::metadata(&img).unwrap().len());
    assert!(s3.object_path(&format!("snapshots/{}.ext4", snap["id"].as_str().unwrap())).exists());

    let b = api.create_box(json!({"snapshot": "tiny", "env": {"BOXV": "box"}})).await;
    assert_eq!(s.runners[0].cached_images(), vec![digest.trim_start_matches("sha256:").to_string()]);
    // No command: the snapshot's; its env under the box's.
    let e = api.exec(&b, &[]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "default yes box\n");
    let e = api.exec(&b, &["pwd"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        std::fs::canonicalize("/tmp").unwrap().display().to_string()
    );

    // In use: not deletable.
    let sid = snap["id"].as_str().unwrap();
    api.delete(&format!("/v1/snapshots/{sid}")).await.err(409, "snapshot_in_use");
    api.delete(&format!("/v1/boxes/{b}")).await;
    assert_eq!(api.delete(&format!("/v1/snapshots/{sid}")).await.status, 204);
    assert!(!s3.object_path(&format!("snapshots/{sid}.ext4")).exists());
    api.post("/v1/boxes", json!({"snapshot": "tiny"})).await.err(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_object_is_refused_naming_the_snapshot() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    let snap = api.snapshot("fragile", &tiny_image(d.path(), "fragile", 50_000), json!({})).await;
    let obj = s3.object_path(&format!("snapshots/{}.ext4", snap["id"].as_str().unwrap()));
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&obj, &bytes).unwrap();

    let r = api.post("/v1/boxes", json!({"snapshot": "fragile"})).await;
    r.err(502, "snapshot_corrupt");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains("fragile") && msg.contains("digest mismatch") && msg.contains(snap["digest"].as_str().unwrap()),
        "{msg}"
    );
    assert!(s.runners[0].cached_images().is_empty(), "a corrupt image was kept");
    assert!(api.get("/v1/boxes").await.ok()["items"].as_array().unwrap().is_empty(), "the failed box stayed");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_boxes_on_an_uncached_snapshot_share_one_download() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 8)], &["--metrics-listen", "127.0.0.1:0"]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    api.snapshot("shared", &tiny_image(d.path(), "shared", 3 << 20), json!({})).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move { api.create_box(json!({"snapshot": "shared"})).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = s.runners[0].metrics().await;
    assert_eq!(metric(&m, "boxyard_runner_snapshot_downloads_total"), Some(1.0), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_under_a_small_budget_keeps_images_in_use() {
    let s3 = S3::start().await;
    // A budget below one image: everything not in use goes.
    let s = Stack::with_s3(&s3, &[("r1", 8)], &["--snapshot-cache", "1MiB"]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    let hex = |v: &serde_json::Value| v["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let a = api.snapshot("a", &tiny_image(d.path(), "a", 2 << 20), json!({})).await;
    let b = api.snapshot("b", &tiny_image(d.path(), "b", 2 << 20), json!({})).await;
    let c = api.snapshot("c", &tiny_image(d.path(), "c", 2 << 20), json!({})).await;
    let box_a = api.create_box(json!({"snapshot": "a"})).await;
    let _box_b = api.create_box(json!({"snapshot": "b"})).await;
    let mut both = vec![hex(&a), hex(&b)];
    both.sort();
    assert_eq!(s.runners[0].cached_images(), both, "images in use were evicted");
    api.delete(&format!("/v1/boxes/{box_a}")).await;
    // The runner drops box a; the next download evicts its image, and keeps b (in use) and c (just fetched).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _box_c = api.create_box(json!({"snapshot": "c"})).await;
        let mut want = vec![hex(&b), hex(&c)];
        want.sort();
        if s.runners[0].cached_images() == want {
            break;
        }
        assert!(Instant::now() < deadline, "cache: {:?}", s.runners[0].cached_images());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_are_private_to_their_org_unless_published() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, alpha) = s.admin.org("alpha").await;
    let (_, beta) = s.admin.org("beta").await;
    let d = tempfile::tempdir().unwrap();
    let snap = alpha.snapshot("mine", &tiny_image(d.path(), "mine", 1000), json!({})).await;
    let sid = snap["id"].as_str().unwrap();
    beta.get(&format!("/v1/snapshots/{sid}")).await.err(404, "not_found");
    beta.delete(&format!("/v1/snapshots/{sid}")).await.err(404, "not_found");
    let up = beta.raw("PUT", &format!("/v1/snapshots/{sid}/image"), vec![1, 2, 3], "application/octet-stream").await;
    up.err(404, "not_found");
    beta.post("/v1/boxes", json!({"snapshot": "mine"})).await.err(404, "not_found");
    assert!(beta.get("/v1/snapshots").await.ok()["items"].as_array().unwrap().is_empty());
    // Members cannot register; org admins cannot publish; platform admins can, and everyone sees it.
    alpha.post("/v1/snapshots", json!({"name": "pub", "public": true})).await.err(403, "forbidden");
    let p = s.admin.post("/v1/snapshots", json!({"name": "pub", "public": true})).await;
    assert_eq!(p.status, 201, "{}", p.body);
    let names: Vec<String> = beta.get("/v1/snapshots").await.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["pub"]);
    // Names are per org.
    let again = beta.post("/v1/snapshots", json!({"name": "mine"})).await;
    assert_eq!(again.status, 201, "{}", again.body);
    alpha.post("/v1/snapshots", json!({"name": "mine"})).await.err(409, "already_exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upload_fails_the_snapshot_and_stores_nothing() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let r = api.post("/v1/snapshots", json!({"name": "cut"})).await;
    let sid = r.ok()["id"].as_str().unwrap().to_string();
    // 12 MiB, then the client's body fails (the connection is cut mid-body).
    let chunks = (0..12).map(|_| Ok::<_, std::io::Error>(vec![9u8; 1 << 20]));
    let body = futures::stream::iter(chunks).chain(futures::stream::iter([Err(std::io::Error::other("cut"))]));
    use futures::StreamExt;
    let res = reqwest::Client::new()
        .put(format!("{}/v1/snapshots/{sid}/image", api.base))
        .bearer_auth(&api.key)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    assert!(res.is_err() || !res.unwrap().status().is_success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let snap = loop {
        let g = api.get(&format!("/v1/snapshots/{sid}")).await;
        if g.ok()["state"] == "failed" {
            break g.body;
        }
        assert!(Instant::now() < deadline, "the snapshot did not fail: {}", g.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(snap["reason"].as_str().unwrap().contains("interrupted"), "{snap}");
    assert!(!s3.object_path(&format!("snapshots/{sid}.ext4")).exists(), "a half object is in the bucket");
    api.post("/v1/boxes", json!({"snapshot": "cut"})).await.err(409, "snapshot_not_ready");
    // A new upload repairs it.
    let d = tempfile::tempdir().unwrap();
    let img = tiny_image(d.path(), "cut", 1000);
    let up = api
        .raw("PUT", &format!("/v1/snapshots/{sid}/image"), std::fs::read(&img).unwrap(), "application/octet-stream")
        .await;
    assert_eq!(up.ok()["state"], "active");
    api.create_box(json!({"snapshot": "cut"})).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_already_in_the_bucket_is_registered_after_its_digest_is_checked() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    let img = tiny_image(d.path(), "pre", 5000);
    let bytes = bytes::Bytes::from(std::fs::read(&img).unwrap());
    let up = s3.store().upload("imported/pre.ext4", futures::stream::iter([Ok(bytes)])).await.unwrap();
    let wait = |id: String| {
        let api = api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let g = api.get(&format!("/v1/snapshots/{id}")).await;
                if g.ok()["state"] != "verifying" {
                    return g.body;
                }
                assert!(Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let good = api
        .post("/v1/snapshots", json!({"name": "pre", "source": {"key": "imported/pre.ext4", "digest": up.digest}}))
        .await;
    assert_eq!(good.ok()["state"], "verifying");
    let g = wait(good.body["id"].as_str().unwrap().to_string()).await;
    assert_eq!(g["state"], "active", "{g}");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let bad = api
        .post("/v1/snapshots", json!({"name": "bad", "source": {"key": "imported/pre.ext4", "digest": wrong}}))
        .await;
    let b = wait(bad.ok()["id"].as_str().unwrap().to_string()).await;
    assert_eq!(b["state"], "failed");
    assert!(b["reason"].as_str().unwrap().contains("digest mismatch"), "{b}");
    api.post("/v1/snapshots", json!({"name": "x", "source": {"key": "k", "digest": "md5:abc"}}))
        .await
        .err(422, "invalid_request");
    // Uploaded images cannot be registered a second time under another name.
    let other = format!("snapshots/{}.ext4", good.body["id"].as_str().unwrap());
    api.post("/v1/snapshots", json!({"name": "y", "source": {"key": other, "digest": up.digest}}))
        .await
        .err(403, "forbidden");
    api.create_box(json!({"snapshot": "pre"})).await;
}
