//! The `boxyard` CLI against a real stack (local backend): run streams both outputs and exits with the remote exit
//! code; ls --json parses; logs replays; bad key, unknown box and unreachable server give one-line errors.

mod harness;

use std::process::Command;

use harness::*;
use serde_json::json;

fn boxyard(url: &str, key: &str, args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(std::path::Path::new(env!("CARGO_BIN_EXE_boxyard-controlplane")).with_file_name("boxyard"))
        .args(args)
        .env("BOXYARD_URL", url)
        .env("BOXYARD_KEY", key)
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_ls_logs_and_errors() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let d = tempfile::tempdir().unwrap();
    api.snapshot("base", &tiny_image(d.path(), "base", 1000), json!({})).await;
    let url = s.cp.api.clone();

    let out = boxyard(&url, &api.key, &["run", "--rm", "base", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("err\n"));
    assert!(api.get("/v1/boxes").await.ok()["items"].as_array().unwrap().is_empty(), "--rm left the box");

    // Without --rm the box stays; ls --json lists it; logs replays an execution after the fact.
    let out = boxyard(&url, &api.key, &["run", "base", "--", "sh", "-c", "seq 1 3"]);
    assert_eq!(out.status.code(), Some(0));
    let ls = boxyard(&url, &api.key, &["--json", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    let id = v[0]["id"].as_str().unwrap().to_string();
    let execs = api.get(&format!("/v1/boxes/{id}/executions")).await;
    let eid = execs.ok()["items"][0]["id"].as_str().unwrap().to_string();
    let logs = boxyard(&url, &api.key, &["logs", &id, &eid]);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "1\n2\n3\n");

    let one_line = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert!(!o.status.success());
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    let e = one_line(&boxyard(&url, "byk_0123456789ab_00000000000000000000000000000000000000000000dead", &["ls"]));
    assert!(e.contains("unauthorized"), "{e}");
    let e = one_line(&boxyard(&url, &api.key, &["inspect", "00000000-0000-0000-0000-000000000000"]));
    assert!(e.contains("not_found"), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = one_line(&boxyard(&format!("http://127.0.0.1:{port}"), &api.key, &["ls"]));
    assert!(e.contains("cannot reach"), "{e}");
}
