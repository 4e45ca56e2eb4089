//! Keys, roles, org isolation, quotas and bad input, against a real control plane and Postgres.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn other_orgs_objects_are_404_on_every_endpoint() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, a) = s.admin.org("alpha").await;
    let (_, b) = s.admin.org("beta").await;
    let bx = a.create_box(json!({})).await;
    let e = a.exec(&bx, &["sh", "-c", "echo hi; sleep 30"]).await;
    let akeys = a.get("/v1/keys").await;
    let akey = akeys.ok()["items"][0]["id"].as_str().unwrap().to_string();

    let p = format!("/v1/boxes/{bx}");
    let x = format!("{p}/executions/{e}");
    let cases: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", p.clone(), None),
        ("DELETE", p.clone(), None),
        ("POST", format!("{p}/start"), Some(json!({}))),
        ("POST", format!("{p}/stop"), Some(json!({}))),
        ("POST", format!("{p}/executions"), Some(json!({"command": ["true"]}))),
        ("GET", format!("{p}/executions"), None),
        ("GET", x.clone(), None),
        ("POST", format!("{x}/kill"), Some(json!({}))),
        ("POST", format!("{x}/signal"), Some(json!({"signal": "TERM"}))),
        ("POST", format!("{x}/resize"), Some(json!({"rows": 10, "cols": 10}))),
        ("GET", format!("{x}/attach"), None),
        ("GET", format!("{p}/files?path=/tmp"), None),
        ("PUT", format!("{p}/files?path=/tmp"), Some(json!({}))),
        ("DELETE", format!("/v1/keys/{akey}"), None),
    ];
    for (m, path, body) in &cases {
        let r = b.send(m, path, body.clone(), &[]).await;
        assert_eq!(r.status, 404, "{m} {path} from another org: {} {}", r.status, r.body);
        assert_eq!(r.body["code"], "not_found", "{m} {path}");
    }
    // Lists do not show them either.
    assert!(b.get("/v1/boxes").await.ok()["items"].as_array().unwrap().is_empty());
    assert!(b.get("/v1/keys").await.ok()["items"].as_array().unwrap().iter().all(|k| k["id"] != akey.as_str()));
    // And the owner still sees everything intact.
    assert_eq!(a.get(&x).await.ok()["state"], "running");
    assert_eq!(a.get(&p).await.ok()["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_roles_and_revocation() {
    let s = Stack::start(&[]).await;
    let (_, admin) = s.admin.org("alpha").await;
    // No key, a malformed key, an unknown key: 401.
    let anon = reqwest::get(format!("{}/v1/me", s.cp.api)).await.unwrap();
    assert_eq!(anon.status(), 401);
    admin.with_key("nonsense").get("/v1/me").await.err(401, "unauthorized");
    admin
        .with_key("byk_0123456789ab_00000000000000000000000000000000000000000000ffff")
        .get("/v1/me")
        .await
        .err(401, "unauthorized");

    let k = admin.post("/v1/keys", json!({"name": "ci"})).await;
    assert_eq!(k.status, 201, "{}", k.body);
    let secret = k.body["secret"].as_str().unwrap().to_string();
    let prefix = k.body["prefix"].as_str().unwrap();
    assert!(secret.starts_with(prefix));
    let member = admin.with_key(&secret);
    assert_eq!(member.get("/v1/me").await.ok()["role"], "member");
    // Members cannot manage keys, org admins cannot administer the platform.
    member.get("/v1/keys").await.err(403, "forbidden");
    admin.get("/v1/admin/orgs").await.err(403, "forbidden");
    admin.post("/v1/keys", json!({"name": "x", "role": "platform_admin"})).await.err(403, "forbidden");
    // Lists show prefixes, never secrets.
    let list = admin.get("/v1/keys").await;
    assert!(!list.ok().to_string().contains(&secret));

    let kid = k.body["id"].as_str().unwrap();
    let r = admin.delete(&format!("/v1/keys/{kid}")).await;
    assert!(r.ok()["revoked_at"].is_string());
    member.get("/v1/me").await.err(401, "unauthorized");
    member.get("/v1/boxes").await.err(401, "unauthorized");
    // The audit log has it.
    let audit = s.admin.get("/v1/admin/audit").await;
    let actions: Vec<&str> =
        audit.ok()["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"key.revoke") && actions.contains(&"key.create") && actions.contains(&"org.create"));
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_exceeded_is_refused_with_a_code() {
    let s = Stack::start(&[("r1", 8)]).await;
    let (org, api) = s.admin.org("alpha").await;
    let q = json!({"max_boxes": 2, "max_vcpus": 3, "max_memory_mib": 4096, "max_box_vcpus": 2,
        "max_box_memory_mib": 2048, "max_box_disk_mib": 4096});
    s.admin.send("PUT", &format!("/v1/admin/orgs/{org}/quota"), Some(q), &[]).await.ok();
    let cfg = api.get("/v1/config").await;
    assert_eq!(cfg.ok()["quota"]["max_boxes"], 2);

    api.post("/v1/boxes", json!({"vcpus": 4})).await.err(422, "quota_exceeded");
    api.post("/v1/boxes", json!({"memory_mib": 4096})).await.err(422, "quota_exceeded");
    let b1 = api.create_box(json!({"vcpus": 2})).await;
    api.post("/v1/boxes", json!({"vcpus": 2})).await.err(429, "quota_exceeded");
    let _b2 = api.create_box(json!({"vcpus": 1})).await;
    api.post("/v1/boxes", json!({"vcpus": 1})).await.err(429, "quota_exceeded");
    // A stopped box no longer counts; starting it again is checked.
    api.post(&format!("/v1/boxes/{b1}/stop"), json!({})).await.ok();
    let b3 = api.create_box(json!({"vcpus": 1})).await;
    api.post(&format!("/v1/boxes/{b1}/start"), json!({})).await.err(429, "quota_exceeded");
    api.delete(&format!("/v1/boxes/{b3}")).await;
    assert_eq!(api.post(&format!("/v1/boxes/{b1}/start"), json!({})).await.ok()["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_4xx_with_code_and_message() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let raw = |body: &str| api.raw("POST", "/v1/boxes", body.as_bytes().to_vec(), "application/json");
    raw("{not json").await.err(400, "invalid_json");
    raw("[1, 2]").await.err(422, "invalid_request");
    raw(r#"{"vcpus": 1, "bogus": true}"#).await.err(422, "invalid_request");
    raw(r#"{"vcpus": "two"}"#).await.err(422, "invalid_request");
    for body in [
        json!({"vcpus": -1}),
        json!({"vcpus": 0}),
        json!({"vcpus": 100000}),
        json!({"memory_mib": -5}),
        json!({"memory_mib": 99999999999i64}),
        json!({"disk_mib": 1}),
        json!({"ttl_seconds": 0}),
        json!({"env": {"A=B": "x"}}),
    ] {
        let r = api.post("/v1/boxes", body.clone()).await;
        assert!(r.status == 422, "{body}: {} {}", r.status, r.body);
        assert!(r.body["code"] == "invalid_request" || r.body["code"] == "quota_exceeded", "{body}: {}", r.body);
    }
    // A huge number that does not even fit: still a 422.
    raw(r#"{"vcpus": 123456789012345678901234567890}"#).await.err(422, "invalid_request");

    let b = api.create_box(json!({})).await;
    api.post(&format!("/v1/boxes/{b}/executions"), json!({"command": []})).await.err(422, "no_command");
    api.post(&format!("/v1/boxes/{b}/executions"), json!({"command": ["x"], "timeout_ms": -1}))
        .await
        .err(422, "invalid_request");
    api.post(&format!("/v1/boxes/{b}/executions"), json!({"cmd": ["x"]})).await.err(422, "invalid_request");
    api.get("/v1/boxes/not-a-uuid").await.err(404, "not_found");
    api.get("/v1/boxes?limit=0").await.err(422, "invalid_request");
    api.get("/v1/boxes?limit=abc").await.err(400, "invalid_query");
    api.get("/v1/boxes?cursor=zzz").await.err(422, "invalid_request");
    api.get("/v1/nothing-here").await.err(404, "not_found");
    api.send("PATCH", "/v1/boxes", None, &[]).await.err(405, "method_not_allowed");
    api.get(&format!("/v1/boxes/{b}/files?path=relative")).await.err(422, "invalid_request");

    // Attach with bad cursors: before the upgrade, as HTTP errors.
    let e = api.exec(&b, &["echo", "12345"]).await;
    api.wait_execution(&b, &e).await;
    let ws = |q: &str| {
        let url = format!("{}/v1/boxes/{b}/executions/{e}/attach{q}", api.base);
        let key = api.key.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (st, body) = ws("?cursor=999").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_cursor")), "{body}");
    let (st, body) = ws("?cursor=-1").await;
    assert_eq!((st, body["code"].as_str()), (400, Some("invalid_query")), "{body}");
    let (st, _) = ws("?cursor=6").await;
    assert_eq!(st, 101);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_describes_every_route() {
    let s = Stack::start(&[]).await;
    let doc: serde_json::Value =
        reqwest::get(format!("{}/v1/openapi.json", s.cp.api)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/boxes",
        "/v1/boxes/{id}",
        "/v1/boxes/{id}/start",
        "/v1/boxes/{id}/stop",
        "/v1/boxes/{id}/executions",
        "/v1/boxes/{id}/executions/{eid}",
        "/v1/boxes/{id}/executions/{eid}/kill",
        "/v1/boxes/{id}/executions/{eid}/signal",
        "/v1/boxes/{id}/executions/{eid}/resize",
        "/v1/boxes/{id}/executions/{eid}/attach",
        "/v1/boxes/{id}/files",
        "/v1/me",
        "/v1/config",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/v1/admin/orgs",
        "/v1/admin/orgs/{org_id}/quota",
        "/v1/admin/runners",
        "/v1/admin/runners/{runner_id}/drain",
        "/v1/admin/join-tokens",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the OpenAPI document");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in ["BoxView", "CreateBox", "ErrorBody", "ExecutionView", "Quota"] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}
