//! The whole path with a real microVM: API gateway → scheduler → runner → guest agent, and the output back over the
//! WebSocket attach; create → exec → attach → stop → start → exec → delete. On the QEMU backend (KVM with hardware
//! virtualization, TCG otherwise), and the first test again on the `kvm` backend (our own monitor, boxyard-vmm):
//! directly with hardware virtualization, inside the nested-KVM harness here.

#![cfg_attr(test, allow(clippy::unwrap_used))]

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
    let backend = boxyard_devstack::nested::backend_name();
    let pg = Pg::start();
    // Inside the nested-KVM harness everything runs under TCG and an L2 boot starves the runner for seconds: the
    // tests' 3 s / 6 s heartbeat deadlines would make the runner flap to unresponsive (no capacity) or lost.
    let relaxed: &[&str] = if std::env::var_os("BOXYARD_NESTED").is_some() {
        &["--runner-unresponsive-after", "30s", "--runner-lost-after", "120s"]
    } else {
        &[]
    };
    let cp = Cp::start(&pg, relaxed);
    let admin = cp.admin();
    let token = admin.join_token().await;
    // The test binary is target/<profile>/deps/<name>; the VMM is target/<profile>/boxyard-vmm.
    let vmm = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("boxyard-vmm");
    let mut args = vec!["--backend", backend, "--guest-dir", &guest, "--rootfs", &rootfs, "--boot-timeout", "120"];
    let vmm = vmm.display().to_string();
    if backend == "kvm" {
        args.extend(["--vmm-binary", &vmm]);
    }
    let r = Runner::start(&cp, "vm1", &token, 2, "2GiB", &args);
    admin.wait_runners(1).await;
    let runners = admin.get("/v1/admin/runners").await;
    assert!(runners.ok()["items"][0]["backend"].as_str().unwrap().starts_with(backend), "{}", runners.body);
    let (_, api) = admin.org("alpha").await;

    let t = Instant::now();
    let created = api.post("/v1/boxes", json!({"vcpus": 1, "memory_mib": 256})).await;
    assert_eq!(
        (created.status, &created.body["state"]),
        (201, &json!("running")),
        "{}\nrunner log:\n{}\ncontrol plane log:\n{}",
        created.body,
        r.log(),
        cp.log()
    );
    let b = created.body["id"].as_str().unwrap().to_string();
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

    // Stop powers the VM off; start boots it again with the box's disk (what it wrote is still there).
    let e = api.exec(&b, &["sh", "-c", "echo kept > /root/marker; sync"]).await;
    assert_eq!(api.wait_execution(&b, &e).await["exit_code"], 0);
    let st = post_retrying(&api, &format!("/v1/boxes/{b}/stop")).await;
    assert_eq!(st.ok()["state"], "stopped", "{}", r.log());
    let st = post_retrying(&api, &format!("/v1/boxes/{b}/start")).await;
    assert_eq!(st.ok()["state"], "running", "{}", r.log());
    let e = api.exec(&b, &["cat", "/root/marker"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    assert_eq!(
        (String::from_utf8_lossy(&out.stdout).as_ref(), out.exit.as_ref().unwrap()["exit_code"].as_i64()),
        ("kept\n", Some(0))
    );

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

/// POSTs `{}` to `path`, following `retry_after` on a 409 `invalid_state` answer as the API asks clients to (a
/// heartbeat that updates the box between the load and the transition makes the control plane answer "retry").
async fn post_retrying(api: &Api, path: &str) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = api.post(path, json!({})).await;
        let Some(secs) = r.body["retry_after"].as_u64() else { return r };
        if r.status != 409 || r.body["code"] != "invalid_state" || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

/// A stack with snapshots in the embedded S3 endpoint and one QEMU runner.
async fn vm_stack(guest: &str, boot_timeout: &str) -> (S3, Stack, Runner) {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[], &[]).await;
    let token = s.admin.join_token().await;
    let mut args = s3.args();
    args.extend(["--backend", "qemu", "--guest-dir", guest, "--boot-timeout", boot_timeout].map(String::from));
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let r = Runner::start(&s.cp, "vm1", &token, 2, "2GiB", &argv);
    s.admin.wait_runners(1).await;
    (s3, s, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_boots_from_a_snapshot_pulled_from_s3() {
    let guest = std::env::var("BOXYARD_GUEST_DIR")
        .unwrap_or_else(|_| workspace().join("build/guest/current").display().to_string());
    let rootfs = std::env::var("BOXYARD_ROOTFS")
        .unwrap_or_else(|_| workspace().join("build/rootfs/busybox.ext4").display().to_string());
    let (_s3, s, _r) = vm_stack(&guest, "120").await;
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

/// An OCI image layout of two layers: busybox (a static binary and its sh link), then a second layer with a file,
/// and a config with env, entrypoint, cmd and working dir.
fn busybox_oci(dir: &std::path::Path) {
    use sha2::Digest;
    let put = |data: &[u8]| {
        let hex = hex::encode(sha2::Sha256::digest(data));
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    let mut l1 = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "tmp", "srv"] {
        l1.append_data(&mut header(tar::EntryType::Directory, 0, 0o755), d, std::io::empty()).unwrap();
    }
    let bb = std::fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh installs it)");
    l1.append_data(&mut header(tar::EntryType::Regular, bb.len() as u64, 0o755), "bin/busybox", bb.as_slice()).unwrap();
    for applet in ["sh", "cat", "echo", "pwd"] {
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        l1.append_link(&mut h, format!("bin/{applet}"), "busybox").unwrap();
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    l1.append_data(&mut header(tar::EntryType::Regular, passwd.len() as u64, 0o644), "etc/passwd", &passwd[..])
        .unwrap();
    let l1 = l1.into_inner().unwrap();
    let mut l2 = tar::Builder::new(Vec::new());
    let msg = b"from the second layer\n";
    l2.append_data(&mut header(tar::EntryType::Regular, msg.len() as u64, 0o644), "srv/msg", &msg[..]).unwrap();
    let l2 = l2.into_inner().unwrap();
    let (d1, s1) = put(&l1);
    let (d2, s2) = put(&l2);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {
        "Env": ["PATH=/bin", "WHO=an OCI image"], "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello from $WHO; cat msg; pwd"], "WorkingDir": "/srv"}});
    let (dc, sc) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1, "size": s1},
                   {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d2, "size": s2}]});
    let (dm, sm) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": sm}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_oci_image_boots_and_its_env_and_cmd_apply() {
    let guest = std::env::var("BOXYARD_GUEST_DIR")
        .unwrap_or_else(|_| workspace().join("build/guest/current").display().to_string());
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    busybox_oci(&layout);
    let tree = d.path().join("tree");
    let meta = boxyard_snapshot::oci::import(&layout, &tree, &d.path().join("scratch")).unwrap();
    let image = d.path().join("oci.ext4");
    boxyard_snapshot::image::build_from_dir(&tree, &image).unwrap();

    let (_s3, s, _r) = vm_stack(&guest, "120").await;
    let (_, api) = s.admin.org("alpha").await;
    api.snapshot("oci", &image, serde_json::to_value(&meta).unwrap()).await;
    let b = api.create_box(json!({"snapshot": "oci"})).await;
    // No command: the image's entrypoint + cmd, in its working dir, with its env.
    let e = api.exec(&b, &[]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from an OCI image\nfrom the second layer\n/srv\n");
    assert_eq!(out.exit.unwrap()["exit_code"], 0);
}

/// A realistic snapshot: a Debian minimal root filesystem (scripts/build-debian-snapshot.sh, debootstrap). Opt-in
/// because building it takes minutes: `cargo nextest run -p boxyard-system-tests --test e2e_qemu --run-ignored only
/// a_debian_snapshot_boots` (with BOXYARD_DEBIAN_IMAGE=<built image> it boots that image instead of building one).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds a Debian snapshot with debootstrap (minutes); run with --run-ignored (BOXYARD_DEBIAN_IMAGE reuses an image)"]
async fn a_debian_snapshot_boots() {
    let image = match std::env::var("BOXYARD_DEBIAN_IMAGE") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => {
            let out = std::process::Command::new("bash")
                .arg(workspace().join("scripts/build-debian-snapshot.sh"))
                .current_dir(workspace())
                .output()
                .unwrap();
            assert!(out.status.success(), "build-debian-snapshot.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
            workspace().join(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let guest = std::env::var("BOXYARD_GUEST_DIR")
        .unwrap_or_else(|_| workspace().join("build/guest/current").display().to_string());
    let (_s3, s, _r) = vm_stack(&guest, "180").await;
    let (_, api) = s.admin.org("alpha").await;
    api.snapshot("debian", &image, json!({})).await;
    let b = api.create_box(json!({"snapshot": "debian", "memory_mib": 512})).await;
    let e = api.exec(&b, &["cat", "/etc/debian_version"]).await;
    let mut out = Output::default();
    assert!(attach(&api, &b, &e, &mut out, None).await);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.trim().chars().next().is_some_and(|c| c.is_ascii_digit()), "debian_version: {v:?}");
    eprintln!("debian_version in the box: {}", v.trim());
    assert_eq!(out.exit.unwrap()["exit_code"], 0);
}

/// The first test again, with a runner on the `kvm` backend (boxyard-vmm).
#[test]
fn a_box_is_a_real_vm_from_create_to_delete_on_the_kvm_backend() {
    if boxyard_devstack::nested::backend_name() == "kvm" {
        eprintln!("already on the kvm backend: nothing to rerun");
        return;
    }
    let rerun = boxyard_devstack::nested::Rerun {
        tests: &["a_box_is_a_real_vm_from_create_to_delete"],
        l1_mem_mib: 3072,
        timeout_s: 420,
    };
    boxyard_devstack::nested::rerun_on_kvm_backend(&workspace(), &rerun);
}
