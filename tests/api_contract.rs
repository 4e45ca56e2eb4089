//! The API contract against a real control plane and Postgres (issue: the API contract): no string reaches the
//! database unvalidated, values are checked before state, error bodies carry request ids and never the database's
//! words, special files are refused as client mistakes, and orgs can be deleted.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use harness::*;
use serde_json::{Map, Value, json};

/// `$ref` → the schema it names.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => doc.pointer(&r[1..]).unwrap_or_else(|| panic!("dangling {r}")),
        None => s,
    }
}

/// The smallest instance the schema accepts (its `example` where a pattern makes one necessary).
fn minimal(doc: &Value, s: &Value) -> Value {
    let s = resolve(doc, s);
    if let Some(e) = s.get("example") {
        return e.clone();
    }
    if let Some(e) = s["enum"].as_array().and_then(|e| e.first()) {
        return e.clone();
    }
    if let Some(branches) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
        return branches.iter().find(|b| b["type"] != "null").map(|b| minimal(doc, b)).unwrap_or(Value::Null);
    }
    let ty = match &s["type"] {
        Value::Array(ts) => ts.iter().find(|t| *t != "null").cloned().unwrap_or(Value::Null),
        t => t.clone(),
    };
    match ty.as_str() {
        Some("object") => {
            let mut m = Map::new();
            for r in s["required"].as_array().into_iter().flatten() {
                let name = r.as_str().unwrap();
                m.insert(name.into(), minimal(doc, &s["properties"][name]));
            }
            Value::Object(m)
        }
        Some("array") => json!([]),
        Some("integer") | Some("number") => s.get("minimum").cloned().unwrap_or(json!(1)),
        Some("boolean") => json!(false),
        Some("string") => json!("a"),
        _ => Value::Null,
    }
}

/// Every instance of the schema that is valid except for one NUL byte in one string (a value or a map key), one
/// per place a string can be.
fn with_one_nul(doc: &Value, s: &Value) -> Vec<Value> {
    let s = resolve(doc, s);
    let mut out = vec![];
    if let Some(branches) = s["oneOf"].as_array().or(s["anyOf"].as_array()) {
        for b in branches.iter().filter(|b| b["type"] != "null") {
            out.extend(with_one_nul(doc, b));
        }
        return out;
    }
    let types: Vec<&str> = match &s["type"] {
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        Value::String(t) => vec![t.as_str()],
        _ => vec![],
    };
    if types.contains(&"string") {
        out.push(json!("a\u{0}b"));
    }
    if types.contains(&"object") {
        let base = minimal(doc, s);
        for (name, prop) in s["properties"].as_object().into_iter().flatten() {
            for v in with_one_nul(doc, prop) {
                let mut o = base.clone();
                o[name] = v;
                out.push(o);
            }
        }
        if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
            for v in with_one_nul(doc, ap) {
                let mut o = base.clone();
                o["K"] = v;
                out.push(o);
            }
            let mut o = base.clone();
            o["K\u{0}"] = minimal(doc, ap);
            out.push(o);
        }
    }
    if types.contains(&"array") {
        let first = s["prefixItems"][0].clone();
        let rest = s.get("items").cloned().unwrap_or(Value::Null);
        if first.is_object() {
            out.extend(with_one_nul(doc, &first).into_iter().map(|v| json!([v])));
        }
        if rest.is_object() {
            let head: Vec<Value> = if first.is_object() { vec![json!("prog")] } else { vec![] };
            for v in with_one_nul(doc, &rest) {
                let mut a = head.clone();
                a.push(v);
                out.push(Value::Array(a));
            }
        }
    }
    out
}

/// A path of the document with its ids filled in (random: the body and the query are checked before any lookup).
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap();
        out.push_str("0190f2c4-0000-7000-8000-000000000001");
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

fn percent(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Generated from the served document, not hand-listed: every string of every JSON body (values and map keys, at
/// every depth) and every string query parameter of every operation, posted with a NUL byte, gets 422.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_byte_in_any_string_of_any_request_is_refused_with_422() {
    let s = Stack::start(&[]).await;
    let doc = s.admin.get("/v1/openapi.json").await.ok().clone();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = concrete(path);
            let method = method.to_uppercase();
            if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
                for body in with_one_nul(&doc, schema) {
                    let r = s.admin.send(&method, &url, Some(body.clone()), &[]).await;
                    assert_eq!(r.status, 422, "{method} {path} {body}: {} {}", r.status, r.body);
                    assert_eq!(r.body["code"], "invalid_request", "{method} {path} {body}");
                    tried += 1;
                }
            }
            let query: Vec<&Value> =
                op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query").collect();
            for p in &query {
                if with_one_nul(&doc, &p["schema"]).is_empty() {
                    continue; // not a string
                }
                let mut q: Vec<String> = query
                    .iter()
                    .filter(|o| o["required"] == true && o["name"] != p["name"])
                    .map(|o| {
                        format!(
                            "{}={}",
                            o["name"].as_str().unwrap(),
                            percent(minimal(&doc, &o["schema"]).as_str().unwrap_or("1"))
                        )
                    })
                    .collect();
                q.push(format!("{}=a%00b", p["name"].as_str().unwrap()));
                let full = format!("{url}?{}", q.join("&"));
                let r = s.admin.send(&method, &full, None, &[]).await;
                assert_eq!(r.status, 422, "{method} {full}: {} {}", r.status, r.body);
                tried += 1;
            }
        }
    }
    // The walk really went everywhere: boxes (name, snapshot, the three maps' keys and values), executions (argv,
    // env, working_dir, user), signals, snapshots (name, metadata, source), keys and org keys (name, role), orgs,
    // join tokens, and the list, label and files query parameters: 37 places when this was written.
    assert!(tried >= 37, "only {tried} requests were generated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_of_the_wrong_json_type_is_422_not_400() {
    let s = Stack::start(&[]).await;
    let (org, admin) = s.admin.org("alpha").await;
    for role in [json!(0), json!(true), json!({}), json!([]), json!(1.5)] {
        let body = json!({"name": "x", "role": role});
        let r = admin.post("/v1/keys", body.clone()).await;
        assert_eq!((r.status, r.body["code"].as_str()), (422, Some("invalid_request")), "{body}: {}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains("role"), "{}", r.body);
        let r = s.admin.post(&format!("/v1/admin/orgs/{org}/keys"), body.clone()).await;
        assert_eq!(r.status, 422, "admin route {body}: {}", r.body);
    }
    // Not JSON at all is still 400, whitespace included (only a body of no bytes reads as `{}`).
    admin.raw("POST", "/v1/keys", b"{\"name\":".to_vec(), "application/json").await.err(400, "invalid_json");
    s.admin.raw("POST", "/v1/admin/join-tokens", b"\n".to_vec(), "application/json").await.err(400, "invalid_json");
    let r = s.admin.raw("POST", "/v1/admin/join-tokens", vec![], "application/json").await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Values are checked before the objects' state: a bad signal or size on a finished execution is 422, not 409.
#[tokio::test(flavor = "multi_thread")]
async fn values_are_checked_before_state() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let b = api.create_box(json!({})).await;
    let e = api.exec(&b, &["true"]).await;
    api.wait_execution(&b, &e).await;
    let x = format!("/v1/boxes/{b}/executions/{e}");
    api.post(&format!("{x}/signal"), json!({"signal": "BOGUS"})).await.err(422, "invalid_request");
    api.post(&format!("{x}/resize"), json!({"rows": 0, "cols": 80})).await.err(422, "invalid_request");
    // Valid values on a finished execution: the state's answer.
    api.post(&format!("{x}/signal"), json!({"signal": "TERM"})).await.err(409, "execution_finished");
    api.post(&format!("{x}/resize"), json!({"rows": 24, "cols": 80})).await.err(409, "execution_finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quota_message_reads_as_english() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (org, api) = s.admin.org("alpha").await;
    let q = json!({"max_boxes": 1, "max_vcpus": 8, "max_memory_mib": 8192, "max_box_vcpus": 4,
        "max_box_memory_mib": 4096, "max_box_disk_mib": 4096});
    s.admin.send("PUT", &format!("/v1/admin/orgs/{org}/quota"), Some(q), &[]).await.ok();
    api.create_box(json!({})).await;
    let r = api.post("/v1/boxes", json!({})).await;
    let msg = r.err(429, "quota_exceeded")["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("the org's quota allows at most 1 active box, and 1 is active."), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn special_files_are_refused_as_client_mistakes() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let b = api.create_box(json!({})).await;
    let dir = format!("/tmp/boxyard-special-{b}");
    let e = api.exec(&b, &["sh", "-c", &format!("mkdir -p {dir} && mkfifo {dir}/pipe && echo x > {dir}/file")]).await;
    assert_eq!(api.wait_execution(&b, &e).await["exit_code"], 0);
    for (path, says) in [
        ("/dev/null".to_string(), "is a character device"),
        ("/dev/zero".to_string(), "is a character device"),
        (format!("{dir}/pipe"), "is a FIFO"),
        ("/proc/self/mem".to_string(), "proc pseudo filesystem"),
        ("/proc".to_string(), "proc pseudo filesystem"),
    ] {
        let r = api.get(&format!("/v1/boxes/{b}/files?path={path}")).await;
        let body = r.err(422, "invalid_request");
        assert!(body["message"].as_str().unwrap().contains(says), "{path}: {body}");
    }
    // A directory holding a FIFO downloads, the FIFO archived as one.
    let (status, tar) = api.bytes(&format!("/v1/boxes/{b}/files?path={dir}")).await;
    assert_eq!(status, 200);
    let mut kinds = vec![];
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let entry = entry.unwrap();
        kinds.push((entry.path().unwrap().to_string_lossy().into_owned(), entry.header().entry_type()));
    }
    let name = dir.rsplit('/').next().unwrap();
    assert!(kinds.contains(&(format!("{name}/pipe"), tar::EntryType::Fifo)), "{kinds:?}");
    assert!(kinds.contains(&(format!("{name}/file"), tar::EntryType::Regular)), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_has_a_request_id_in_its_header_its_error_body_and_its_log() {
    let s = Stack::start(&[]).await;
    // A usable id from the client is kept; otherwise a new one.
    let r = s.admin.send("GET", "/v1/me", None, &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(r.headers["x-request-id"], "trace-abc-123");
    let r = s.admin.send("GET", "/v1/me", None, &[("x-request-id", "has space")]).await;
    let fresh = r.headers["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(fresh, "has space");
    // Errors carry it in the body too, the unknown-endpoint fallback included.
    for path in ["/v1/boxes/not-an-id", "/v1/nowhere"] {
        let r = s.admin.get(path).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.body["request_id"], r.headers["x-request-id"].to_str().unwrap(), "{path}");
    }
    let r = s.admin.send("GET", "/v1/boxes?limit=0", None, &[("x-request-id", "limit-zero")]).await;
    assert_eq!(r.body["request_id"], "limit-zero");

    // A database error: the client gets `internal` with the request id, never the database's words; the log has
    // both.
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql")
            .args([&s.pg.url(), "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql("ALTER TABLE audit_log RENAME TO audit_log_away");
    let r = s.admin.send("GET", "/v1/admin/audit", None, &[("x-request-id", "db-broke-1")]).await;
    psql("ALTER TABLE audit_log_away RENAME TO audit_log");
    let body = r.err(500, "internal");
    assert_eq!(body["request_id"], "db-broke-1");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("db-broke-1"), "{msg}");
    assert!(!msg.contains("audit_log") && !msg.contains("relation"), "the database's words leaked: {msg}");
    let log = s.cp.log();
    let line = log.lines().find(|l| l.contains("db-broke-1") && l.contains("audit_log")).unwrap_or_else(|| {
        panic!(
            "no log line names both the request id and the database error:\n{}",
            &log[log.len().saturating_sub(4000)..]
        )
    });
    assert!(line.contains("database error"), "{line}");
    s.admin.get("/v1/admin/audit").await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_is_deleted_only_when_empty_and_its_keys_stop_working() {
    let s3 = S3::start().await;
    let s = Stack::with_s3(&s3, &[("r1", 4)], &[]).await;
    let (org, api) = s.admin.org("doomed").await;
    let b = api.create_box(json!({})).await;
    let snap = api.post("/v1/snapshots", json!({"name": "img"})).await;
    assert_eq!(snap.status, 201, "{}", snap.body);
    let snap = snap.body["id"].as_str().unwrap().to_string();

    let r = s.admin.delete(&format!("/v1/admin/orgs/{org}")).await;
    let msg = r.err(409, "org_in_use")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("still has 1 box and 1 snapshot;"), "{msg}");
    api.delete(&format!("/v1/boxes/{b}")).await;
    s.admin.delete(&format!("/v1/admin/orgs/{org}")).await.err(409, "org_in_use");
    assert_eq!(api.delete(&format!("/v1/snapshots/{snap}")).await.status, 204);

    // Only platform admins; never the caller's own org; unknown ids are 404.
    api.delete(&format!("/v1/admin/orgs/{org}")).await.err(403, "forbidden");
    let me = s.admin.get("/v1/me").await.ok().clone();
    s.admin.delete(&format!("/v1/admin/orgs/{}", me["org_id"].as_str().unwrap())).await.err(409, "invalid_state");
    s.admin.delete("/v1/admin/orgs/0190f2c4-0000-7000-8000-000000000001").await.err(404, "not_found");

    assert_eq!(s.admin.delete(&format!("/v1/admin/orgs/{org}")).await.status, 204);
    api.get("/v1/me").await.err(401, "unauthorized");
    s.admin.get(&format!("/v1/admin/orgs/{org}")).await.err(404, "not_found");
    let audit = s.admin.get("/v1/admin/audit").await.ok().clone();
    let entry = audit["items"].as_array().unwrap().iter().find(|e| e["action"] == "org.delete").unwrap().clone();
    assert_eq!(entry["target"], "doomed");
    assert_eq!(entry["details"]["keys_revoked"], 1);
    // The name is free again.
    let (_, again) = s.admin.org("doomed").await;
    again.get("/v1/me").await.ok();
}

/// What only the box can know is a 409 of the box's state, and what the request's shape says is a 422: a user the
/// box's /etc/passwd lacks, a missing working directory, versus a relative one.
#[tokio::test(flavor = "multi_thread")]
async fn rules_of_the_box_are_409_and_rules_of_the_request_422() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let b = api.create_box(json!({})).await;
    let x = format!("/v1/boxes/{b}/executions");
    let r = api.post(&x, json!({"command": ["true"], "user": "no-such-user-here"})).await;
    assert!(r.err(409, "failed_precondition")["message"].as_str().unwrap().contains("/etc/passwd"), "{}", r.body);
    api.post(&x, json!({"command": ["true"], "working_dir": "/no/such/dir"})).await.err(409, "failed_precondition");
    api.post(&x, json!({"command": ["true"], "working_dir": "relative"})).await.err(422, "invalid_request");
    api.post(&x, json!({"command": ["true"], "user": "1:x"})).await.err(422, "invalid_request");
}

/// An Idempotency-Key is 1 to 255 visible ASCII characters: an inner space is refused (HTTP itself drops the
/// spaces around a header value).
#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_with_an_inner_space_is_refused() {
    let s = Stack::start(&[]).await;
    let (_, api) = s.admin.org("alpha").await;
    let r = api.send("POST", "/v1/boxes?wait=false", Some(json!({})), &[("Idempotency-Key", "two words")]).await;
    r.err(400, "invalid_idempotency_key");
    let r = api.send("POST", "/v1/boxes?wait=false", Some(json!({})), &[("Idempotency-Key", "  padded  ")]).await;
    assert_eq!(r.status, 202, "a padded key is the key without its padding: {}", r.body);
}
