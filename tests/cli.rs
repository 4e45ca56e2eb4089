//! The `boxyard` CLI against a real stack (local backend): run streams both outputs and exits with the remote exit
//! code; ls --json parses; logs replays; bad key, unknown box and unreachable server give one-line errors.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::process::Command;

use harness::*;
use serde_json::json;

fn boxyard(url: &str, key: &str, args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(bin("boxyard"))
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

    // -i forwards stdin (here a pipe), then EOF.
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("boxyard"))
        .args(["run", "--rm", "-i", "base", "--", "sh"])
        .env("BOXYARD_URL", &url)
        .env("BOXYARD_KEY", &api.key)
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"echo typed $((6*7)); exit 5\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string()),
        (Some(5), "typed 42\n".to_string())
    );

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

    // Administration.
    let out = boxyard(&url, ADMIN_KEY, &["admin", "org", "create", "gamma"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let orgs: serde_json::Value =
        serde_json::from_slice(&boxyard(&url, ADMIN_KEY, &["--json", "admin", "org", "ls"]).stdout).unwrap();
    let gamma = orgs["items"].as_array().unwrap().iter().find(|o| o["name"] == "gamma").unwrap()["id"].clone();
    let out = boxyard(&url, ADMIN_KEY, &["admin", "org", "rm", gamma.as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let orgs: serde_json::Value =
        serde_json::from_slice(&boxyard(&url, ADMIN_KEY, &["--json", "admin", "org", "ls"]).stdout).unwrap();
    assert!(orgs["items"].as_array().unwrap().iter().all(|o| o["name"] != "gamma"), "{orgs}");
    let alpha = orgs["items"].as_array().unwrap().iter().find(|o| o["name"] == "alpha").unwrap()["id"].clone();
    let refused = boxyard(&url, ADMIN_KEY, &["admin", "org", "rm", alpha.as_str().unwrap()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("org_in_use"), "{refused:?}");
    let runners = boxyard(&url, ADMIN_KEY, &["admin", "runner", "ls"]);
    assert!(String::from_utf8_lossy(&runners.stdout).contains("r1"));
    let denied = boxyard(&url, &api.key, &["admin", "org", "ls"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));

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

#[tokio::test(flavor = "multi_thread")]
async fn cp_round_trips_and_snapshots_build_and_push() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let url = s.cp.api.clone();
    let d = tempfile::tempdir().unwrap();

    // snapshot build from a directory, push, ls.
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "built\n").unwrap();
    let img = d.path().join("built.ext4");
    let out = boxyard(&url, &api.key, &["snapshot", "build", tree.to_str().unwrap(), "-o", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = boxyard_snapshot::digest_file(&img).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&digest));
    let out = boxyard(&url, &api.key, &["--json", "snapshot", "push", "built", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["state"].as_str(), v["digest"].as_str()), (Some("active"), Some(digest.as_str())));
    let ls = boxyard(&url, &api.key, &["--json", "snapshot", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(v[0]["name"], "built");

    // create, cp in and out byte-exactly, stop, start, rm.
    let out = boxyard(&url, &api.key, &["create", "built"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let payload: Vec<u8> = (0..300_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect();
    let local = d.path().join("payload.bin");
    std::fs::write(&local, &payload).unwrap();
    let out = boxyard(&url, &api.key, &["cp", local.to_str().unwrap(), &format!("{id}:/tmp/in")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = d.path().join("back");
    let out = boxyard(&url, &api.key, &["cp", &format!("{id}:/tmp/in/payload.bin"), back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(back.join("payload.bin")).unwrap() == payload, "cp changed the bytes");
    assert!(boxyard(&url, &api.key, &["stop", &id]).status.success());
    assert!(String::from_utf8_lossy(&boxyard(&url, &api.key, &["start", &id]).stdout).contains("running"));
    assert!(!boxyard(&url, &api.key, &["rm", &id]).status.success(), "rm of a running box without -f");
    assert!(boxyard(&url, &api.key, &["rm", "-f", &id]).status.success());
    assert!(boxyard(&url, &api.key, &["completions", "bash"]).stdout.len() > 1000);
}
