//! The REST bodies byte for byte: what the gateway has always emitted (field names, order, null and empty values)
//! and what the SDK has always sent.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use crate::*;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

#[test]
fn a_box_is_emitted_as_before_and_reads_back() {
    let t = Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap() + chrono::Duration::microseconds(123456);
    let b = BoxView {
        id: id(1),
        name: Some("a".into()),
        snapshot: None,
        vcpus: 1,
        memory_mib: 512,
        disk_mib: 1024,
        env: BTreeMap::from([("K".into(), "V".into())]),
        labels: BTreeMap::new(),
        runner_selector: BTreeMap::new(),
        state: BoxState::Running,
        desired_state: DesiredState::Running,
        reason: None,
        runner_id: Some(id(2)),
        auto_stop_seconds: None,
        ttl_seconds: Some(60),
        created_at: t,
        updated_at: t,
        started_at: Some(t),
        stopped_at: None,
        last_activity_at: t,
    };
    let json = serde_json::to_string(&b).unwrap();
    let at = "2026-12-01T11:00:00.123456Z";
    assert_eq!(
        json,
        format!(
            r#"{{"id":"00000000-0000-0000-0000-000000000001","name":"a","snapshot":null,"vcpus":1,"memory_mib":512,"disk_mib":1024,"env":{{"K":"V"}},"labels":{{}},"runner_selector":{{}},"state":"running","desired_state":"running","reason":null,"runner_id":"00000000-0000-0000-0000-000000000002","auto_stop_seconds":null,"ttl_seconds":60,"created_at":"{at}","updated_at":"{at}","started_at":"{at}","stopped_at":null,"last_activity_at":"{at}"}}"#
        )
    );
    assert_eq!(serde_json::from_str::<BoxView>(&json).unwrap(), b);
}

#[test]
fn an_execution_is_emitted_as_before() {
    let t = Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap();
    let x = ExecutionView {
        id: id(3),
        box_id: id(1),
        command: vec!["ls".into()],
        env: BTreeMap::new(),
        working_dir: None,
        user: None,
        tty: false,
        stdin: true,
        timeout_ms: None,
        state: ExecutionState::Finished,
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        killed: false,
        error: None,
        output_start: 0,
        output_bytes: 5,
        created_at: t,
        finished_at: Some(t),
    };
    let json = serde_json::to_string(&x).unwrap();
    assert_eq!(
        json,
        r#"{"id":"00000000-0000-0000-0000-000000000003","box_id":"00000000-0000-0000-0000-000000000001","command":["ls"],"env":{},"working_dir":null,"user":null,"tty":false,"stdin":true,"timeout_ms":null,"state":"finished","exit_code":0,"signal":null,"timed_out":false,"killed":false,"error":null,"output_start":0,"output_bytes":5,"created_at":"2026-12-01T11:00:00Z","finished_at":"2026-12-01T11:00:00Z"}"#
    );
    assert_eq!(serde_json::from_str::<ExecutionView>(&json).unwrap(), x);
}

#[test]
fn created_secrets_are_flattened_into_their_object() {
    let t = Utc.with_ymd_and_hms(2026, 12, 1, 11, 0, 0).unwrap();
    let k = KeyCreated {
        key: KeyView {
            id: id(4),
            org_id: id(5),
            name: "ci".into(),
            prefix: "byk_ab".into(),
            role: Role::PlatformAdmin,
            created_at: t,
            last_used_at: None,
            revoked_at: None,
        },
        secret: "byk_secret".into(),
    };
    let json = serde_json::to_string(&k).unwrap();
    assert_eq!(
        json,
        r#"{"id":"00000000-0000-0000-0000-000000000004","org_id":"00000000-0000-0000-0000-000000000005","name":"ci","prefix":"byk_ab","role":"platform_admin","created_at":"2026-12-01T11:00:00Z","last_used_at":null,"revoked_at":null,"secret":"byk_secret"}"#
    );
    assert_eq!(serde_json::from_str::<KeyCreated>(&json).unwrap(), k);
}

/// Requests as the SDK sends them (absent options left out) and as the gateway reads them (absent is default,
/// unknown fields refused).
#[test]
fn requests_leave_out_what_is_not_set() {
    assert_eq!(serde_json::to_string(&CreateBox::default()).unwrap(), "{}");
    let b = CreateBox { snapshot: Some("base".into()), vcpus: Some(2), ..Default::default() };
    assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"snapshot":"base","vcpus":2}"#);
    assert_eq!(
        serde_json::to_string(&CreateExecution::new(["ls", "-l"])).unwrap(),
        r#"{"command":["ls","-l"],"stdin":false}"#
    );
    assert_eq!(serde_json::from_str::<CreateExecution>("{}").unwrap(), CreateExecution::default());
    assert_eq!(serde_json::from_str::<CreateBox>("{}").unwrap(), CreateBox::default());
    assert!(serde_json::from_str::<CreateBox>(r#"{"cpus":2}"#).is_err());
    assert!(serde_json::from_str::<SnapshotMetadata>(r#"{"entrypoint":[]}"#).is_err());
    let s = CreateSnapshot { name: "base".into(), ..Default::default() };
    assert_eq!(
        serde_json::to_string(&s).unwrap(),
        r#"{"name":"base","public":false,"metadata":{"cmd":[],"env":{},"working_dir":null,"user":null}}"#
    );
    assert_eq!(serde_json::to_string(&CreateKey { name: "k".into(), role: None }).unwrap(), r#"{"name":"k"}"#);
    assert!(serde_json::from_str::<CreateKey>(r#"{"name":"k","role":"root"}"#).is_err());
}
