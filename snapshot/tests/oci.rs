//! OCI import: layers in order with whiteouts and opaque directories, gzip layers, the config's env/cmd/workdir/user,
//! both the OCI layout and the docker save format, and a reproducible image from the result.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::io::Write;
use std::path::Path;

use boxyard_snapshot::oci::import;
use sha2::{Digest, Sha256};

fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put_blob(root: &Path, data: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(data));
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(root.join("blobs/sha256").join(&hex), data).unwrap();
    format!("sha256:{hex}")
}

fn layers() -> (Vec<u8>, Vec<u8>) {
    let l1 = tar_of(&[
        ("etc", None),
        ("etc/keep", Some(b"kept\n")),
        ("etc/old", Some(b"deleted by the next layer\n")),
        ("var", None),
        ("var/cache", None),
        ("var/cache/a", Some(b"a")),
        ("var/cache/b", Some(b"b")),
    ]);
    let l2 = tar_of(&[
        ("etc/.wh.old", Some(b"")),
        ("var/cache/.wh..wh..opq", Some(b"")),
        ("var/cache/new", Some(b"fresh\n")),
        ("etc/keep", Some(b"overwritten\n")),
    ]);
    (l1, l2)
}

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","GREETING=hi there"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo $GREETING"],"WorkingDir":"/var","User":"1000"},"rootfs":{"type":"layers","diff_ids":[]}}"#;

fn oci_layout(root: &Path) {
    let (l1, l2) = layers();
    let d1 = put_blob(root, &l1);
    let d2 = put_blob(root, &gzip(&l2));
    let dc = put_blob(root, CONFIG.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": CONFIG.len()},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1, "size": l1.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d2, "size": 0},
        ]
    });
    let m = serde_json::to_vec(&manifest).unwrap();
    let dm = put_blob(root, &m);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": m.len()}]});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn check(tree: &Path, meta: &boxyard_snapshot::image::Metadata) {
    assert_eq!(std::fs::read_to_string(tree.join("etc/keep")).unwrap(), "overwritten\n");
    assert!(!tree.join("etc/old").exists(), "whiteout not applied");
    assert!(!tree.join("var/cache/a").exists() && !tree.join("var/cache/b").exists(), "opaque dir not applied");
    assert_eq!(std::fs::read_to_string(tree.join("var/cache/new")).unwrap(), "fresh\n");
    assert_eq!(meta.cmd, vec!["/bin/sh", "-c", "echo $GREETING"]);
    assert_eq!(meta.env.get("GREETING").map(String::as_str), Some("hi there"));
    assert_eq!(meta.working_dir.as_deref(), Some("/var"));
    assert_eq!(meta.user.as_deref(), Some("1000"));
}

fn tar_dir(dir: &Path, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

#[test]
fn an_oci_layout_archive_imports_with_whiteouts_and_config() {
    let d = tempfile::tempdir().unwrap();
    let layout = d.path().join("layout");
    oci_layout(&layout);
    let archive = d.path().join("image.tar");
    tar_dir(&layout, &archive);
    let tree = d.path().join("tree");
    let meta = import(&archive, &tree, &d.path().join("scratch")).unwrap();
    check(&tree, &meta);
    // Importing twice gives the same image.
    let tree2 = d.path().join("tree2");
    import(&layout, &tree2, &d.path().join("scratch2")).unwrap();
    let a = boxyard_snapshot::image::build_from_dir(&tree, &d.path().join("a.ext4")).unwrap();
    let b = boxyard_snapshot::image::build_from_dir(&tree2, &d.path().join("b.ext4")).unwrap();
    assert_eq!(a.digest, b.digest);
}

#[test]
fn a_docker_save_archive_imports() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("save");
    std::fs::create_dir_all(root.join("l1")).unwrap();
    std::fs::create_dir_all(root.join("l2")).unwrap();
    let (l1, l2) = layers();
    std::fs::write(root.join("l1/layer.tar"), l1).unwrap();
    std::fs::write(root.join("l2/layer.tar"), l2).unwrap();
    std::fs::write(root.join("cfg.json"), CONFIG).unwrap();
    std::fs::write(
        root.join("manifest.json"),
        r#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#,
    )
    .unwrap();
    let archive = d.path().join("save.tar");
    tar_dir(&root, &archive);
    let tree = d.path().join("tree");
    let meta = import(&archive, &tree, &d.path().join("scratch")).unwrap();
    check(&tree, &meta);
}

#[test]
fn not_an_image_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let e = import(d.path(), &d.path().join("t"), &d.path().join("s")).unwrap_err();
    assert!(e.to_string().contains("neither an OCI image layout"), "{e}");
}
