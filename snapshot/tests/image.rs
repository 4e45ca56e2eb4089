//! The image builder: reproducible, and the tree is inside.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use boxyard_snapshot::image::{build_from_dir, read_file};

fn tree(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("etc/hostname"), "snap\n").unwrap();
    std::fs::write(root.join("bin/tool"), vec![42u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/alias")).unwrap();
}

#[test]
fn same_tree_same_digest_and_the_files_are_inside() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    tree(&a);
    // The same content written later (other mtimes, other inodes) in another directory.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    tree(&b);
    let x = build_from_dir(&a, &d.path().join("a.ext4")).unwrap();
    let y = build_from_dir(&b, &d.path().join("b.ext4")).unwrap();
    assert_eq!(x.digest, y.digest, "the same tree gave two different images");
    assert_eq!(read_file(&x.path, "/etc/hostname").unwrap(), b"snap\n");
    assert_eq!(read_file(&x.path, "/bin/tool").unwrap().len(), 300_000);
    std::fs::write(b.join("etc/hostname"), "other\n").unwrap();
    let z = build_from_dir(&b, &d.path().join("c.ext4")).unwrap();
    assert_ne!(x.digest, z.digest);
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let e = build_from_dir(std::path::Path::new("/nonexistent/tree"), std::path::Path::new("/tmp/x.ext4")).unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
}
