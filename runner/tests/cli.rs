//! `boxyard-runner vm run` end to end: a real VM, the command's output and exit status.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;

use std::process::Command;

fn runner() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_boxyard-runner"));
    c.current_dir(common::workspace());
    c
}

#[test]
fn vm_run_streams_output_and_exits_with_the_command_status() {
    common::guest_image();
    common::rootfs();
    let out = runner()
        .args(["vm", "run", "--", "sh", "-c", "echo hello from a microVM; echo oops >&2; exit 7"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from a microVM\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn vm_run_reports_bad_input_clearly() {
    let out = runner().args(["vm", "run", "--kernel", "/no/such/vmlinuz", "--", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(err.contains("kernel not found at /no/such/vmlinuz"), "{err}");

    let out = runner().args(["vm", "run", "--memory", "lots", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory"));

    let help = runner().args(["vm", "run", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit status"));
}

/// `-i` forwards stdin (with EOF); afterwards nothing is left behind: no run directory, no QEMU process.
#[test]
fn vm_run_forwards_stdin_and_cleans_up() {
    common::guest_image();
    common::rootfs();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = runner()
        .env("TMPDIR", tmp.path())
        .args(["vm", "run", "-i", "--", "sh", "-c", "tr a-z A-Z; echo done"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"piped through a vm\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED THROUGH A VM\ndone\n");
    assert_eq!(out.status.code(), Some(0));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "vm run left files behind: {left:?}");
    let procs = Command::new("pgrep").arg("-f").arg(tmp.path()).output().unwrap();
    assert!(procs.stdout.is_empty(), "a QEMU process outlived vm run: {}", String::from_utf8_lossy(&procs.stdout));
}
