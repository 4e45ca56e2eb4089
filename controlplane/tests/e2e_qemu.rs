//! The whole path with a real microVM: API gateway → scheduler → runner (QEMU backend: KVM with hardware
//! virtualization, TCG otherwise) → guest agent, and the output back over the WebSocket attach.

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_box_is_a_real_vm_from_create_to_delete() {
    let guest = std::env::var("BOXYARD_GUEST_DIR")
        .unwrap_or_else(|_| workspace().join("build/guest/current").display().to_string());
    let rootfs = std::env::var("BOXYARD_ROOTFS")
        .unwrap_or_else(|_| workspace().join("build/rootfs/busybox.ext4").display().to_string());
    assert!(
        std::path::Path::new(&guest).join("vmlinuz").exists(),
        "guest image missing in {guest}: run scripts/build-guest.sh (scripts/test.sh does)"
    );
    assert!(std::path::Path::new(&rootfs).exists(), "root image missing at {rootfs}: run scripts/build-rootfs.sh");
    let pg = Pg::start();
    let cp = Cp::start(&pg, &[]);
    let admin = cp.admin();
    let token = admin.join_token().await;
    let r = Runner::start(
        &cp,
        "vm1",
        &token,
        2,
        "2GiB",
        &["--backend", "qemu", "--guest-dir", &guest, "--rootfs", &rootfs, "--boot-timeout", "120"],
    );
    admin.wait_runners(1).await;
    let runners = admin.get("/v1/admin/runners").await;
    assert!(runners.ok()["items"][0]["backend"].as_str().unwrap().starts_with("qemu"), "{}", runners.body);
    let (_, api) = admin.org("alpha").await;

    let t = Instant::now();
    let b = api.create_box(json!({"vcpus": 1, "memory_mib": 256})).await;
    eprintln!("create → running: {:?}", t.elapsed());
    let e = api.exec(&b, &["sh", "-c", "echo hello from a microVM; cat /proc/1/comm; echo err >&2; exit 7"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("hello from a microVM\n"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit.unwrap()["exit_code"], 7);
    // PID 1 is our guest agent inside the VM, not the host's init.
    assert!(!stdout.contains("systemd"), "{stdout}");

    assert_eq!(api.delete(&format!("/v1/boxes/{b}")).await.status, 204);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rr = admin.get("/v1/admin/runners").await;
        if rr.ok()["items"][0]["boxes"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the runner still has the box: {}\n{}", rr.body, r.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_boots_from_a_snapshot_pulled_from_s3() {
    let guest = std::env::var("BOXYARD_GUEST_DIR")
        .unwrap_or_else(|_| workspace().join("build/guest/current").display().to_string());
    let rootfs = std::env::var("BOXYARD_ROOTFS")
        .unwrap_or_else(|_| workspace().join("build/rootfs/busybox.ext4").display().to_string());
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[], &[]).await;
    let token = s.admin.join_token().await;
    let mut args = s3.args();
    args.extend(["--backend", "qemu", "--guest-dir", &guest, "--boot-timeout", "120"].map(String::from));
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let _r = Runner::start(&s.cp, "vm1", &token, 2, "2GiB", &argv);
    s.admin.wait_runners(1).await;
    let (_, api) = s.admin.org("alpha").await;
    // The busybox root image of the test suite, registered as a snapshot with defaults.
    api.snapshot(
        "base",
        std::path::Path::new(&rootfs),
        json!({"env": {"GREETING": "from the snapshot"}, "working_dir": "/etc"}),
    )
    .await;
    let b = api.create_box(json!({"snapshot": "base"})).await;
    let e = api.exec(&b, &["sh", "-c", "echo $GREETING; pwd; cat os-release | head -1"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the snapshot\n/etc\nNAME=\"boxyard-busybox\"\n");
    assert_eq!(out.exit.unwrap()["exit_code"], 0);
}
