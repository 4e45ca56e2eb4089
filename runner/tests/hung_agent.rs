//! A guest agent that hangs while connected (the `local` backend's agent process SIGSTOPped, as a frozen VM would
//! be): every runner call that needs the agent fails within its deadline (`--agent-timeout`) with a clear
//! UNAVAILABLE, calls that do not need it answer at once, and the box can still be stopped and destroyed.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::time::{Duration, Instant};

use boxyard_proto::runner as pb;
use harness::*;

/// The pid of a box's local agent.
fn agent_pid(r: &RunnerProc, box_id: &str) -> i32 {
    let p = r.state.join("boxes").join(box_id).join("vm/guest.pid");
    std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
}

fn freeze(pid: i32) {
    // SAFETY: plain kill(2) of the test's own agent process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
}

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let v = tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"));
    println!("{what}: {:?}", t.elapsed());
    v
}

#[tokio::test]
async fn a_hung_agent_fails_calls_within_their_deadline_and_the_box_still_stops_and_goes() {
    let r = RunnerProc::local(&["--agent-timeout", "2s"]);
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    let e = c.exec(sh("b1", "echo up; sleep 60")).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    let mut out = Reassembled::default();
    while out.stdout.is_empty() {
        out.apply(a.events.message().await.unwrap().unwrap());
    }
    freeze(agent_pid(&r, "b1"));

    // Calls that need the agent: a clear UNAVAILABLE after the deadline, not a hang.
    let err = within(Duration::from_secs(8), "Exec", c.exec(exec_req("b1", &["true"]))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("did not answer") && err.message().contains("2s"), "{err:?}");
    let sig = pb::SignalRequest { execution_id: e.execution_id.clone(), signal: "TERM".into() };
    let err = within(Duration::from_secs(8), "Signal", c.signal(sig)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    // The refused Exec left nothing behind.
    let inv = c.list_boxes(pb::ListBoxesRequest {}).await.unwrap().into_inner();
    assert_eq!(inv.boxes[0].executions.len(), 1, "{inv:?}");

    // Calls that do not need the agent answer at once.
    let info = within(Duration::from_secs(1), "GetBox", c.get_box(pb::BoxRef { box_id: "b1".into() })).await;
    assert_eq!(info.unwrap().into_inner().state, pb::BoxState::Running as i32);
    let ex = pb::ExecutionRef { execution_id: e.execution_id.clone() };
    let got = within(Duration::from_secs(1), "GetExecution", c.get_execution(ex)).await.unwrap().into_inner();
    assert_eq!(got.state, pb::ExecutionState::Running as i32);

    // The box still stops (its VM is killed once the agent does not power it off), keeping the output.
    let stop = pb::StopBoxRequest { box_id: "b1".into(), timeout_ms: 2000 };
    let stopped = within(Duration::from_secs(20), "StopBox", c.stop_box(stop)).await.unwrap().into_inner();
    assert_eq!(stopped.state, pb::BoxState::Stopped as i32, "{stopped:?}");
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.stdout, b"up\n");
    assert!(!out.result.unwrap().error.is_empty(), "the cut-off execution must say why its end is unknown");

    // And a second box, hung, is destroyed directly.
    create_box(&mut c, "b2").await;
    let pid = agent_pid(&r, "b2");
    freeze(pid);
    let gone = within(Duration::from_secs(10), "DestroyBox", c.destroy_box(pb::BoxRef { box_id: "b2".into() })).await;
    assert!(gone.unwrap().into_inner().existed);
    assert!(!r.state.join("boxes/b2").exists());
    assert!(pids_mentioning(&r.state.join("boxes/b2").display().to_string()).is_empty(), "the hung agent still runs");
    assert!(c.destroy_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner().existed);
}
