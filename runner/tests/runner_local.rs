//! The runner API end to end, against a real `boxyard-runner serve` process with the `local` backend (the guest
//! agent as a host process): output is never lost or duplicated across cut attaches, runner crashes and restarts;
//! retention gaps, slow readers, stdin/resize/signal through Attach, lifecycle and errors.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use boxyard_proto::runner::{self as pb, attach_request::Msg, execution_result::Outcome};
use harness::*;

#[tokio::test]
async fn fifty_megabytes_survive_twenty_cuts_exactly() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    const N: u64 = 3_200_000;
    let expected = seq(N);
    let total = 2 * expected.len() as u64;
    let e = c.exec(sh("b1", &format!("seq 1 {N} & seq 1 {N} >&2; wait"))).await.unwrap().into_inner();

    // 20 cut points spread over the output, from a seed printed for reproduction.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("cut seed {seed}");
    let mut x = seed | 1;
    let mut cuts: Vec<u64> = (0..20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % total
        })
        .collect();
    cuts.sort_unstable();
    cuts.reverse();

    let mut out = Reassembled::default();
    let mut attaches = 0;
    while out.result.is_none() {
        let mut a = attach(&mut c, &e.execution_id, out.cursor).await.unwrap();
        attaches += 1;
        while let Some(ev) = a.events.message().await.unwrap() {
            out.apply(ev);
            if cuts.last().is_some_and(|&cut| out.cursor >= cut) {
                while cuts.last().is_some_and(|&cut| out.cursor >= cut) {
                    cuts.pop();
                }
                break; // Drop the stream mid-flight: a cut.
            }
        }
    }
    assert!(attaches >= 2, "the stream was never cut");
    assert_eq!(out.exit_code(), Some(0));
    assert_eq!(out.cursor, total);
    assert!(out.stdout == expected, "stdout differs from seq 1 {N}");
    assert!(out.stderr == expected, "stderr differs from seq 1 {N}");
    assert!(out.gaps.is_empty());
    println!("{attaches} attaches for {total} bytes");
}

#[tokio::test]
async fn runner_killed_mid_execution_loses_nothing() {
    let mut r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c
        .exec(sh("b1", "seq 1 300000; sleep 1; seq 1 200000 >&2; sleep 1; seq 300001 400000; exit 5"))
        .await
        .unwrap()
        .into_inner();
    let mut out = Reassembled::default();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    while out.cursor < 100_000 {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    drop(a);
    r.kill9();
    // The process keeps producing while no runner runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.start();
    let mut c = r.client().await;
    let inv = c.list_boxes(pb::ListBoxesRequest {}).await.unwrap().into_inner();
    assert_eq!(inv.boxes.len(), 1);
    assert_eq!(inv.boxes[0].state, pb::BoxState::Running as i32, "the box was re-adopted: {inv:?}");
    assert_eq!(inv.boxes[0].executions.len(), 1);
    let mut a = attach(&mut c, &e.execution_id, out.cursor).await.unwrap();
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.exit_code(), Some(5));
    assert!(out.stdout == seq(400_000), "stdout is incomplete or duplicated");
    assert!(out.stderr == seq(200_000), "stderr is incomplete or duplicated");
}

#[tokio::test]
async fn execution_finishing_while_the_runner_is_down_is_complete() {
    let mut r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(sh("b1", "sleep 0.5; seq 1 200000; echo done >&2; exit 7")).await.unwrap().into_inner();
    r.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.start();
    let mut c = r.client().await;
    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.exit_code(), Some(7));
    assert!(out.stdout == seq(200_000));
    assert_eq!(out.stderr, b"done\n");
    let info = c.get_execution(pb::ExecutionRef { execution_id: e.execution_id.clone() }).await.unwrap().into_inner();
    assert_eq!(info.state, pb::ExecutionState::Finished as i32);
    assert_eq!(info.output_end, out.cursor);
}

#[tokio::test]
async fn retention_cap_gives_an_explicit_gap() {
    let r = RunnerProc::local(&["--log-retention", "1MiB", "--log-segment", "256KiB"]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(exec_req("b1", &["seq", "1", "1000000"])).await.unwrap().into_inner();
    let info = wait_finished(&mut c, &e.execution_id, Duration::from_secs(30)).await;
    let expected = seq(1_000_000);
    assert_eq!(info.output_end, expected.len() as u64);
    let start = info.output_start;
    assert!(start > 0, "retention dropped nothing: {info:?}");
    assert!(info.output_end - start <= (1 << 20) + (256 << 10), "retained more than cap + one segment: {info:?}");
    assert!(info.output_end - start >= (1 << 20) - (256 << 10), "retained far less than the cap: {info:?}");

    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.gaps, vec![(0, start)]);
    assert!(out.stdout == expected[start as usize..], "retained output differs");
    assert_eq!(out.exit_code(), Some(0));

    // A reader inside the retained range sees no gap.
    let from = start + 1000;
    let out = collect(&mut c, &e.execution_id, from).await;
    assert!(out.gaps.is_empty());
    assert!(out.stdout == expected[from as usize..]);
}

#[tokio::test]
async fn a_slow_reader_slows_neither_the_process_nor_a_fast_reader() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    const N: u64 = 1_500_000;
    let expected = seq(N);
    let total = expected.len() as u64;
    let e = c.exec(exec_req("b1", &["seq", "1", &N.to_string()])).await.unwrap().into_inner();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    let slow = {
        let (mut c, id, progress) = (c.clone(), e.execution_id.clone(), progress.clone());
        tokio::spawn(async move {
            let mut out = Reassembled::default();
            let mut a = attach(&mut c, &id, 0).await.unwrap();
            while let Some(ev) = a.events.message().await.unwrap() {
                let len = match &ev.event {
                    Some(pb::attach_event::Event::Output(o)) => o.data.len(),
                    _ => 0,
                };
                out.apply(ev);
                progress.store(out.cursor, std::sync::atomic::Ordering::SeqCst);
                // About 4 MB/s.
                tokio::time::sleep(Duration::from_micros(len as u64 / 4)).await;
            }
            out
        })
    };
    let fast = {
        let (mut c, id) = (c.clone(), e.execution_id.clone());
        tokio::spawn(async move { collect(&mut c, &id, 0).await })
    };
    wait_finished(&mut c, &e.execution_id, Duration::from_secs(30)).await;
    let slow_at_finish = progress.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        slow_at_finish < total / 2,
        "the process finished only after the slow reader had read {slow_at_finish} of {total} bytes"
    );
    let fast = fast.await.unwrap();
    assert!(fast.stdout == expected);
    let slow = slow.await.unwrap();
    assert!(slow.stdout == expected);
    assert_eq!(slow.exit_code(), Some(0));
}

#[tokio::test]
async fn unknown_ids_and_bad_requests_get_precise_codes() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    let err = attach(&mut c, "ex-nope", 0).await.err().expect("attach to an unknown execution fails");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("ex-nope"));
    let err = c.get_execution(pb::ExecutionRef { execution_id: "ex-nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.exec(exec_req("nobox", &["true"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = c.create_box(pb::CreateBoxRequest { box_id: "Bad/Id".into(), spec: None }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // CreateBox is idempotent for the same spec, ALREADY_EXISTS for another.
    let a = create_box(&mut c, "b1").await;
    let b = create_box(&mut c, "b1").await;
    assert_eq!(a.created_unix_ms, b.created_unix_ms);
    let other = pb::BoxSpec { memory_mib: 1024, ..Default::default() };
    let err = c.create_box(pb::CreateBoxRequest { box_id: "b1".into(), spec: Some(other) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    let err = c.exec(exec_req("b1", &[])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // A cursor past the output is OUT_OF_RANGE.
    let e = c.exec(exec_req("b1", &["echo", "hi"])).await.unwrap().into_inner();
    wait_finished(&mut c, &e.execution_id, Duration::from_secs(10)).await;
    let err = attach(&mut c, &e.execution_id, 1000).await.err().expect("attach past the end fails");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    // Exec with the same id and argv returns the same execution; another argv is ALREADY_EXISTS.
    let mut req = exec_req("b1", &["echo", "hi"]);
    req.execution_id = e.execution_id.clone();
    assert_eq!(c.exec(req.clone()).await.unwrap().into_inner().execution_id, e.execution_id);
    req.argv = vec!["echo".into(), "other".into()];
    assert_eq!(c.exec(req).await.unwrap_err().code(), tonic::Code::AlreadyExists);
    // A command that does not exist runs and ends with 127 and an error.
    let e = c.exec(exec_req("b1", &["/no/such/command"])).await.unwrap().into_inner();
    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.exit_code(), Some(127));
    assert!(!out.result.unwrap().error.is_empty());
    // Signals are checked.
    let err = c.signal(pb::SignalRequest { execution_id: e.execution_id, signal: "SIGWHAT".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

async fn send(a: &Attach, msg: Msg) {
    a.input.send(pb::AttachRequest { msg: Some(msg) }).await.unwrap();
}

#[tokio::test]
async fn stdin_resize_and_signal_through_attach() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;

    // stdin, with a resend of the first chunk (as a client does after a cut): never duplicated.
    let mut req = exec_req("b1", &["cat"]);
    req.stdin = true;
    let e = c.exec(req).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    // `attached` says where stdin stands.
    let mut out = Reassembled::default();
    out.apply(a.events.message().await.unwrap().unwrap());
    assert_eq!((out.attached, out.stdin_offset), (1, Some(0)), "no stdin offset in attached");
    let stdin =
        |data: &[u8], offset: Option<u64>, eof: bool| Msg::Stdin(pb::StdinData { data: data.to_vec(), eof, offset });
    send(&a, stdin(b"hello\n", Some(0), false)).await;
    // The write is acknowledged with the offset after it.
    while out.stdin_offset != Some(6) {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    send(&a, stdin(b"hello\n", Some(0), false)).await;
    send(&a, stdin(b"world", None, true)).await;
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.stdout, b"hello\nworld");
    assert_eq!(out.exit_code(), Some(0));

    // resize of a terminal, then stdin to let the command print the size.
    let mut req = sh("b1", "read x; stty size");
    req.stdin = true;
    req.tty = Some(pb::Tty { rows: 24, cols: 80 });
    let e = c.exec(req).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    send(&a, Msg::Resize(pb::Tty { rows: 50, cols: 132 })).await;
    send(&a, stdin(b"go\n", None, false)).await;
    let mut out = Reassembled::default();
    out.drain(&mut a).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 132"), "{:?}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.exit_code(), Some(0));

    // a signal the command traps.
    let e = c
        .exec(sh("b1", "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.05; done"))
        .await
        .unwrap()
        .into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let mut out = Reassembled::default();
    while !out.stdout.ends_with(b"ready\n") {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    send(&a, Msg::Signal("TERM".into())).await;
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.stdout, b"ready\ngot-term\n");
    assert_eq!(out.exit_code(), Some(9));

    // stdin to an execution started without it: a clear FAILED_PRECONDITION ends the attach.
    let e = c.exec(exec_req("b1", &["sleep", "5"])).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    send(&a, stdin(b"x", None, false)).await;
    let err = loop {
        match a.events.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the attach ended without an error"),
            Err(s) => break s,
        }
    };
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("without stdin"), "{err:?}");
    c.kill_execution(pb::ExecutionRef { execution_id: e.execution_id.clone() }).await.unwrap();
    let out = collect(&mut c, &e.execution_id, 0).await;
    let res = out.result.unwrap();
    assert!(res.killed);
    assert_eq!(res.outcome, Some(Outcome::Signal("SIGKILL".into())));
}

#[tokio::test]
async fn several_attaches_at_once_and_after_the_end() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e =
        c.exec(sh("b1", "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo err >&2")).await.unwrap().into_inner();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (mut c, id) = (c.clone(), e.execution_id.clone());
            tokio::spawn(async move { collect(&mut c, &id, 0).await })
        })
        .collect();
    for r in readers {
        let out = r.await.unwrap();
        assert_eq!(out.stdout, b"line 1\nline 2\nline 3\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.exit_code(), Some(0));
    }
    // Attaching to a finished execution replays and ends; from a middle cursor it gets exactly the rest.
    let out = collect(&mut c, &e.execution_id, 7).await;
    assert_eq!(out.stdout, b"line 2\nline 3\n");
}

#[tokio::test]
async fn finished_executions_are_collected_after_their_ttl() {
    let r = RunnerProc::local(&["--finished-ttl", "1s", "--gc-interval", "200ms"]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(exec_req("b1", &["echo", "hi"])).await.unwrap().into_inner();
    assert_eq!(collect(&mut c, &e.execution_id, 0).await.stdout, b"hi\n");
    let dir = r.state.join("boxes/b1/executions").join(&e.execution_id);
    assert!(dir.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get_execution(pb::ExecutionRef { execution_id: e.execution_id.clone() }).await.is_ok() {
        assert!(Instant::now() < deadline, "the finished execution was never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dir.exists(), "its directory must be deleted too");
}

#[tokio::test]
async fn box_lifecycle_stop_start_destroy() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    let info = create_box(&mut c, "b1").await;
    assert_eq!(info.state, pb::BoxState::Running as i32);
    assert_eq!(info.backend, "local");
    let e = c.exec(exec_req("b1", &["sh", "-c", "echo started; sleep 30"])).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let mut out = Reassembled::default();
    while out.stdout.is_empty() {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    let stopped = c.stop_box(pb::StopBoxRequest { box_id: "b1".into(), timeout_ms: 2000 }).await.unwrap().into_inner();
    assert_eq!(stopped.state, pb::BoxState::Stopped as i32);
    // The running execution was ended by SIGTERM before the box went away; its output is kept.
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.stdout, b"started\n");
    let res = out.result.unwrap();
    assert_eq!(res.outcome, Some(Outcome::Signal("SIGTERM".into())), "{res:?}");
    let err = c.exec(exec_req("b1", &["true"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("StartBox"), "{err:?}");

    let started = c.start_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner();
    assert_eq!(started.state, pb::BoxState::Running as i32);
    let e2 = c.exec(exec_req("b1", &["echo", "again"])).await.unwrap().into_inner();
    assert_eq!(collect(&mut c, &e2.execution_id, 0).await.stdout, b"again\n");

    assert!(c.destroy_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner().existed);
    assert!(!c.destroy_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner().existed);
    assert!(!r.state.join("boxes/b1").exists());
    assert!(pids_mentioning(&r.state.join("boxes/b1").display().to_string()).is_empty(), "the box's agent still runs");
    let err = c.get_execution(pb::ExecutionRef { execution_id: e2.execution_id }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// Stopping a box ends its executions first (SIGTERM, then SIGKILL for those that ignore it) and stores what they
/// print on the way out: nothing is cut off, and each gets the result that ended it.
#[tokio::test]
async fn stopping_a_box_lets_its_executions_finish_their_output() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let polite = c
        .exec(sh("b1", "trap 'echo cleaning up; seq 1 20000; exit 3' TERM; echo started; while :; do sleep 0.1; done"))
        .await
        .unwrap()
        .into_inner();
    let stubborn =
        c.exec(sh("b1", "trap '' TERM; echo started; while :; do sleep 0.1; done")).await.unwrap().into_inner();
    for e in [&polite, &stubborn] {
        let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
        let mut out = Reassembled::default();
        while out.stdout.is_empty() {
            out.apply(a.events.message().await.unwrap().unwrap());
        }
    }
    let t = Instant::now();
    let stopped = c.stop_box(pb::StopBoxRequest { box_id: "b1".into(), timeout_ms: 4000 }).await.unwrap().into_inner();
    assert_eq!(stopped.state, pb::BoxState::Stopped as i32);
    println!("stopped in {:?}", t.elapsed());

    let out = collect(&mut c, &polite.execution_id, 0).await;
    let mut expected = b"started\ncleaning up\n".to_vec();
    expected.extend(seq(20000));
    assert!(out.stdout == expected, "the trap's output was cut: {} bytes of {}", out.stdout.len(), expected.len());
    assert_eq!(out.exit_code(), Some(3), "{:?}", out.result);

    let out = collect(&mut c, &stubborn.execution_id, 0).await;
    assert_eq!(out.stdout, b"started\n");
    assert_eq!(out.result.unwrap().outcome, Some(Outcome::Signal("SIGKILL".into())));
}

#[tokio::test]
async fn a_box_whose_vm_died_while_the_runner_was_down_is_reported_stopped() {
    let mut r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(sh("b1", "echo before; sleep 60")).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let mut out = Reassembled::default();
    while out.stdout.is_empty() {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    drop(a);
    r.kill9();
    // The box's "VM" (the local agent) ends while no runner runs.
    for pid in pids_mentioning(&r.state.join("boxes/b1/vm/agent.sock").display().to_string()) {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.start();
    let mut c = r.client().await;
    let b = c.get_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner();
    assert_eq!(b.state, pb::BoxState::Stopped as i32);
    assert!(b.reason.contains("while the runner was not running"), "{b:?}");
    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.stdout, b"before\n");
    assert!(!out.result.unwrap().error.is_empty());
}

#[tokio::test]
async fn sigterm_stops_the_runner_but_not_its_boxes() {
    let mut r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(sh("b1", "echo one; sleep 1; echo two")).await.unwrap().into_inner();
    // An open attach must not hold the shutdown for long.
    let _a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let t0 = Instant::now();
    r.terminate();
    assert!(t0.elapsed() < Duration::from_secs(8), "the runner took {:?} to stop", t0.elapsed());
    assert!(!r.state.join("runner.addr").exists(), "a stopped runner removes its address file");
    assert_eq!(pids_mentioning(&r.state.join("boxes/b1/vm/agent.sock").display().to_string()).len(), 1);
    r.start();
    let mut c = r.client().await;
    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.stdout, b"one\ntwo\n");
    assert_eq!(out.exit_code(), Some(0));
}

#[tokio::test]
async fn the_api_is_served_only_over_tls_with_the_runner_certificate() {
    let r = RunnerProc::local(&[]);
    let addr: String = serde_json::from_slice(&std::fs::read(r.state.join("runner.addr")).unwrap()).unwrap();
    // A certificate the client trusts but the runner does not hold.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let refused = match boxyard_runner::client::connect(&addr, other.cert.pem().as_bytes(), "localhost").await {
        Err(_) => true,
        Ok(mut c) => c.list_boxes(pb::ListBoxesRequest {}).await.is_err(),
    };
    assert!(refused, "a client that does not trust the runner's certificate was served");
    plaintext_is_refused(&addr).await;
}

async fn plaintext_is_refused(addr: &str) {
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    match plain.connect().await {
        Err(_) => {}
        Ok(ch) => {
            let mut c = pb::runner_client::RunnerClient::new(ch);
            assert!(c.list_boxes(pb::ListBoxesRequest {}).await.is_err(), "plaintext gRPC was served");
        }
    }
}

#[tokio::test]
async fn destroying_a_box_ends_its_attaches_with_not_found() {
    let r = RunnerProc::local(&[]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(sh("b1", "echo up; sleep 30")).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let mut out = Reassembled::default();
    while out.stdout.is_empty() {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    assert!(c.destroy_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner().existed);
    let err = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match a.events.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the attach ended without saying why"),
                Err(s) => break s,
            }
        }
    })
    .await
    .expect("the attach of a destroyed box must end");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // The same id can be created again at once.
    assert_eq!(create_box(&mut c, "b1").await.state, pb::BoxState::Running as i32);
}

/// GET /metrics over plain HTTP/1.0 (no client library needed).
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn metrics_report_boxes_and_executions() {
    let r = RunnerProc::local(&["--metrics-listen", "127.0.0.1:0"]);
    let log = r.log();
    let addr = log
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string();
    let mut c = r.client().await;
    create_box(&mut c, "m1").await;
    let e = c.exec(sh("m1", "printf 12345")).await.unwrap().into_inner();
    wait_finished(&mut c, &e.execution_id, Duration::from_secs(30)).await;
    let text = tokio::task::spawn_blocking(move || scrape(&addr)).await.unwrap();
    assert!(text.contains("boxyard_runner_boxes{state=\"running\"} 1"), "{text}");
    assert!(text.contains("boxyard_runner_executions{state=\"finished\"} 1"), "{text}");
    assert!(text.contains("boxyard_runner_output_bytes 5"), "{text}");
}
