//! The main path through the API gateway against real components (Postgres, control plane, a local-backend
//! runner): create → exec → attach → exit result; attach resumed after cuts; stdin; files; idempotency.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn create_exec_attach_exit() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("acme").await;
    let me = api.get("/v1/me").await;
    assert_eq!(me.ok()["org_name"], "acme");
    assert_eq!(me.body["role"], "admin");

    let b = api
        .create_box(json!({"vcpus": 1, "memory_mib": 256, "env": {"GREETING": "hi"}, "labels": {"team": "a"}}))
        .await;
    let got = api.get(&format!("/v1/boxes/{b}")).await;
    assert_eq!(got.ok()["state"], "running");
    assert_eq!(got.body["labels"]["team"], "a");

    let e = api.exec(&b, &["sh", "-c", "echo out $GREETING; echo err >&2; exit 3"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await, "no exit message");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let exit = out.exit.unwrap();
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["output_end"], out.next);

    let x = api.wait_execution(&b, &e).await;
    assert_eq!(x["state"], "finished");
    assert_eq!(x["exit_code"], 3);
    assert_eq!(x["output_bytes"], out.next);

    // Replay after the fact, from a cursor in the middle.
    let mut tail = Output { next: 3, ..Default::default() };
    assert!(attach(&api, &b, &e, &mut tail, None).await);
    assert_eq!(tail.stdout.len() + tail.stderr.len() + 3, out.next as usize);

    let list = api.get(&format!("/v1/boxes/{b}/executions")).await;
    assert_eq!(list.ok()["items"].as_array().unwrap().len(), 1);

    // stdin through the WebSocket.
    let r = api
        .post(&format!("/v1/boxes/{b}/executions"), json!({"command": ["sh", "-c", "tr a-z A-Z"], "stdin": true}))
        .await;
    let e2 = r.ok()["id"].as_str().unwrap().to_string();
    let o = attach_with_stdin(&api, &b, &e2, b"hello stdin").await;
    assert_eq!(o.stdout, b"HELLO STDIN");
    assert_eq!(o.exit.unwrap()["exit_code"], 0);

    // Files: a tar round trip.
    let mut tar = tar::Builder::new(Vec::new());
    let payload: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(payload.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "data.bin", payload.as_slice()).unwrap();
    let archive = tar.into_inner().unwrap();
    let up = api.raw("PUT", &format!("/v1/boxes/{b}/files?path=/tmp/upl"), archive, "application/x-tar").await;
    assert_eq!(up.ok()["entries"], 1);
    let (status, back) = api.bytes(&format!("/v1/boxes/{b}/files?path=/tmp/upl/data.bin")).await;
    assert_eq!(status, 200);
    let mut ar = tar::Archive::new(back.as_slice());
    let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
    assert_eq!(content, payload);

    // Stop, start, delete.
    let st = api.post(&format!("/v1/boxes/{b}/stop"), json!({})).await;
    assert_eq!(st.ok()["state"], "stopped");
    api.post(&format!("/v1/boxes/{b}/executions"), json!({"command": ["true"]})).await.err(409, "box_not_running");
    let st = api.post(&format!("/v1/boxes/{b}/start"), json!({})).await;
    assert_eq!(st.ok()["state"], "running");
    let e3 = api.exec(&b, &["echo", "again"]).await;
    assert_eq!(api.wait_execution(&b, &e3).await["exit_code"], 0);
    assert_eq!(api.delete(&format!("/v1/boxes/{b}")).await.status, 204);
    api.get(&format!("/v1/boxes/{b}")).await.err(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_resumes_after_ten_cuts_without_loss_or_duplicates() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("acme").await;
    let b = api.create_box(json!({})).await;
    // ~2.9 MB of numbered lines on stdout, a line on stderr every 1000.
    let e =
        api.exec(&b, &["sh", "-c", "i=0; seq 1 400000; while [ $i -lt 20 ]; do echo e$i >&2; i=$((i+1)); done"]).await;
    let mut out = Output::default();
    let mut cuts = 0;
    while !attach(&api, &b, &e, &mut out, if cuts < 10 { Some(150_000) } else { None }).await {
        cuts += 1;
        assert!(cuts <= 10, "attach ended without an exit message after the cuts");
    }
    assert_eq!(cuts, 10, "the output ended before ten cuts were made");
    let expected: String = (1..=400000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected.as_bytes(), "stdout differs from the expected sequence");
    let err: String = (0..20).map(|i| format!("e{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stderr), err);
    assert!(out.gaps.is_empty());
    assert_eq!(out.exit.unwrap()["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_makes_create_and_exec_safe_to_retry() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("acme").await;
    let h = [("Idempotency-Key", "create-1")];
    let a = api.send("POST", "/v1/boxes", Some(json!({"name": "x"})), &h).await;
    let b = api.send("POST", "/v1/boxes", Some(json!({"name": "x"})), &h).await;
    assert_eq!(a.status, 201);
    assert_eq!(b.status, 201);
    assert_eq!(a.body["id"], b.body["id"]);
    assert_eq!(b.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let list = api.get("/v1/boxes").await;
    assert_eq!(list.ok()["items"].as_array().unwrap().len(), 1);
    // Same key, other body.
    api.send("POST", "/v1/boxes", Some(json!({"name": "y"})), &h).await.err(422, "idempotency_key_reused");

    let id = a.body["id"].as_str().unwrap();
    let h = [("Idempotency-Key", "exec-1")];
    let body = json!({"command": ["sh", "-c", "echo once >> /tmp/idem-count-$$; echo run"]});
    let x = api.send("POST", &format!("/v1/boxes/{id}/executions"), Some(body.clone()), &h).await;
    let y = api.send("POST", &format!("/v1/boxes/{id}/executions"), Some(body), &h).await;
    assert_eq!(x.status, 201);
    assert_eq!(x.body["id"], y.body["id"]);
    let list = api.get(&format!("/v1/boxes/{id}/executions")).await;
    assert_eq!(list.ok()["items"].as_array().unwrap().len(), 1);

    // An error of the moment (409: the box is stopped) is not stored: the retry runs once the box runs again.
    api.post(&format!("/v1/boxes/{id}/stop"), json!({})).await.ok();
    let h = [("Idempotency-Key", "exec-2")];
    let body = json!({"command": ["true"]});
    api.send("POST", &format!("/v1/boxes/{id}/executions"), Some(body.clone()), &h).await.err(409, "box_not_running");
    api.post(&format!("/v1/boxes/{id}/start"), json!({})).await.ok();
    let r = api.send("POST", &format!("/v1/boxes/{id}/executions"), Some(body), &h).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_resumes_across_gateway_and_runner_restarts() {
    let mut s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("acme").await;
    let b = api.create_box(json!({})).await;
    // Output keeps coming for a few seconds, so the restarts happen mid-stream.
    let e = api
        .exec(
            &b,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 300 ]; do seq $((i*1000+1)) $((i*1000+1000)); i=$((i+1)); sleep 0.01; done",
            ],
        )
        .await;
    let mut out = Output::default();
    // A second attach from the start runs beside the first, untouched by what happens to the first.
    let (api2, b2, e2) = (api.clone(), b.clone(), e.clone());
    let other = tokio::spawn(async move {
        let mut o = Output::default();
        while !attach(&api2, &b2, &e2, &mut o, None).await {}
        o
    });
    assert!(!attach(&api, &b, &e, &mut out, Some(100_000)).await);
    s.cp.restart();
    assert!(!attach(&api, &b, &e, &mut out, Some(100_000)).await);
    s.runners[0].kill9();
    s.runners[0].spawn();
    while !attach(&api, &b, &e, &mut out, None).await {}
    let expected: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert!(
        out.stdout == expected.as_bytes(),
        "stdout differs ({} bytes, expected {})",
        out.stdout.len(),
        expected.len()
    );
    assert_eq!(out.exit.as_ref().unwrap()["exit_code"], 0);
    let o = other.await.unwrap();
    assert!(o.stdout == expected.as_bytes(), "the concurrent attach differs");
}
