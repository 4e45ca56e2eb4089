//! The API contract as served: the OpenAPI document of `/v1/openapi.json` and the request validators compiled from
//! that same document.
//!
//! The document is generated from the handlers' `#[utoipa::path]` annotations and the contract crate's types, then
//! completed here with what holds for every operation: no string carries a NUL byte, every operation can answer
//! `401`, `500` and `503 database_unavailable`, a JSON body can be refused with `400`, `413` and `422`, a query with
//! `400` and `422`, a path id with `404`, a box's runner `502` (and `429` on writes), every response carries `x-request-id`, a body that may be empty is not
//! `required`, and operation ids are unique (`{tag}_{handler}`). The extractors ([`super::extract`]) check every JSON body and every query against the schema of its
//! operation in this document, so a client reads exactly the rules the server applies.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::Method;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::error::ApiError;

/// The pattern every string without a pattern of its own gets: no NUL byte.
pub use boxyard_api::schema::NO_NUL;

/// The served document and the validators of every operation.
pub struct Contract {
    document: Value,
    /// By routed path, then method: looked up with the request's borrowed path, nothing allocated per request.
    operations: HashMap<String, HashMap<Method, Checks>>,
}

/// The compiled schemas of one operation.
#[derive(Default)]
struct Checks {
    body: Option<jsonschema::Validator>,
    query: Option<jsonschema::Validator>,
}

/// Which part of a request a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The JSON body.
    Body,
    /// The query parameters.
    Query,
}

static CONTRACT: LazyLock<Contract> = LazyLock::new(|| Contract::build(super::ApiDoc::openapi()));

/// The contract of this build (generated and compiled once).
pub fn contract() -> &'static Contract {
    &CONTRACT
}

impl Contract {
    /// Completes `doc` and compiles the validators of its operations.
    ///
    /// # Panics
    /// If a schema of the document does not compile: the document is generated from this build's code, so that is
    /// a bug that every test run finds at once.
    #[allow(clippy::expect_used)]
    pub fn build(doc: utoipa::openapi::OpenApi) -> Contract {
        let mut document = serde_json::to_value(doc).expect("the OpenAPI document serializes");
        complete(&mut document);
        let defs = document["components"]["schemas"].clone();
        let mut operations: HashMap<String, HashMap<Method, Checks>> = HashMap::new();
        let mut optional_bodies = vec![];
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for (key, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = key.to_uppercase().parse::<Method>() else { continue };
                let compile = |schema: Value| {
                    compile(schema, &defs).unwrap_or_else(|e| panic!("{method} {path}: schema does not compile: {e}"))
                };
                let checks = Checks { body: json_body_schema(op).map(compile), query: query_schema(op).map(compile) };
                // A body that may be empty (it reads as `{}`) is not required.
                if checks.body.as_ref().is_some_and(|v| v.is_valid(&json!({}))) {
                    optional_bodies.push(format!("/paths/{}/{}/requestBody", pointer_escape(path), key));
                }
                operations.entry(path.clone()).or_default().insert(method, checks);
            }
        }
        for pointer in optional_bodies {
            if let Some(rb) = document.pointer_mut(&pointer) {
                rb["required"] = Value::Bool(false);
            }
        }
        Contract { document, operations }
    }

    /// The OpenAPI 3.1 document, as `/v1/openapi.json` serves it.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Checks the JSON body (or the query, as a JSON object of typed values) of a request to the operation `method
    /// path` (`path` as routed, e.g. `/v1/boxes/{id}`): `422 invalid_request` naming the first value that breaks
    /// the schema.
    ///
    /// An operation the document does not describe, or one without that part, is a bug: `500 internal`.
    pub fn check(&self, method: &Method, path: &str, part: Part, value: &Value) -> Result<(), ApiError> {
        let checks = self.operations.get(path).and_then(|m| m.get(method));
        let validator = checks.and_then(|c| match part {
            Part::Body => c.body.as_ref(),
            Part::Query => c.query.as_ref(),
        });
        let Some(validator) = validator else {
            return Err(ApiError::internal(format!("{method} {path} has no documented {part:?} schema")));
        };
        validator.validate(value).map_err(|e| ApiError::invalid(describe(part, &e)))
    }
}

/// A validation error in the words of the API: where (`name`, `env.PATH`, `tty.rows`, the query parameter) and
/// what is wrong.
fn describe(part: Part, e: &jsonschema::ValidationError<'_>) -> String {
    let pointer = e.instance_path().as_str();
    let field: Vec<String> = pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    let place = match (part, field.is_empty()) {
        (Part::Body, true) => "the body".to_string(),
        (Part::Body, false) => field.join("."),
        (Part::Query, true) => "the query".to_string(),
        (Part::Query, false) => format!("query parameter {}", field.join(".")),
    };
    format!("invalid request: {place} {}", detail(e))
}

/// What is wrong with a value. For an optional value (`oneOf: [null, X]`) the `null` branch's complaint says
/// nothing useful: the other branch's does.
fn detail(e: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    match e.kind() {
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            let is_null_branch = |b: &Vec<jsonschema::ValidationError<'static>>| {
                b.len() == 1 && b[0].to_string().ends_with("is not of type \"null\"")
            };
            match context.iter().filter(|b| !is_null_branch(b)).flatten().next() {
                Some(inner) => detail(inner),
                None => e.to_string(),
            }
        }
        K::Pattern { .. } if has_nul(e) => "must not contain a NUL byte (no string in this API may)".to_string(),
        K::PropertyNames { error } if has_nul(error) => {
            "has a key with a NUL byte (no string in this API may contain one)".to_string()
        }
        K::PropertyNames { error } => format!("has a key that is not allowed: {error}"),
        _ => e.to_string(),
    }
}

/// Whether the value an error is about is a string with a NUL byte (then that is what to say, whatever else its
/// pattern asks).
fn has_nul(e: &jsonschema::ValidationError<'_>) -> bool {
    e.instance().as_str().is_some_and(|s| s.contains('\0'))
}

fn compile(schema: Value, defs: &Value) -> Result<jsonschema::Validator, String> {
    let mut root = relocate_refs(schema);
    if let Value::Object(m) = &mut root {
        m.insert("$defs".into(), relocate_refs(defs.clone()));
    }
    jsonschema::draft202012::options().should_validate_formats(true).build(&root).map_err(|e| e.to_string())
}

/// `#/components/schemas/X` → `#/$defs/X`: the components travel with each schema as its `$defs`.
fn relocate_refs(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get_mut("$ref")
                    && let Some(name) = r.strip_prefix("#/components/schemas/")
                {
                    *r = format!("#/$defs/{name}");
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn json_body_schema(op: &Value) -> Option<Value> {
    op.pointer("/requestBody/content/application~1json/schema").cloned()
}

/// The query parameters of an operation as one object schema.
fn query_schema(op: &Value) -> Option<Value> {
    let params: Vec<&Value> =
        op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query").collect();
    if params.is_empty() {
        return None;
    }
    let mut props = Map::new();
    let mut required = vec![];
    for p in params {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if p["required"] == true {
            required.push(Value::String(name.clone()));
        }
        props.insert(name, p["schema"].clone());
    }
    Some(json!({"type": "object", "properties": props, "required": required, "additionalProperties": false}))
}

/// Adds the rules that hold for every operation (see the module's comment).
pub fn complete(doc: &mut Value) {
    // Strings: no NUL, wherever they are.
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.values_mut().for_each(no_nul);
    }
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path_template, item) in paths.iter_mut() {
        let path_template = path_template.clone();
        for (method, op) in item.as_object_mut().into_iter().flat_map(|m| m.iter_mut()) {
            let method = method.clone();
            complete_operation(&path_template, &method, op);
        }
    }
}

fn complete_operation(path_template: &str, method: &str, op: &mut Value) {
    // Operation ids are the handlers' names, which repeat across resources (`create`, `list`): prefixed with the
    // tag they are unique, and name generated clients' functions well (`boxes_create`, `admin_delete_org`).
    if let (Some(tag), Some(Value::String(id))) =
        (op["tags"][0].as_str().map(str::to_string), op.get_mut("operationId"))
        && !id.starts_with(&format!("{tag}_"))
    {
        *id = format!("{tag}_{id}");
    }
    let params = op.get_mut("parameters").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    let (query, path) = (has("query"), has("path"));
    let mut params = params;
    for p in &mut params {
        if let Some(s) = p.get_mut("schema") {
            no_nul(s);
        }
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    let json_body = op.pointer("/requestBody/content/application~1json").is_some();
    if let Some(rb) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
        for media in rb.get_mut("content").and_then(Value::as_object_mut).into_iter().flat_map(|c| c.values_mut()) {
            if let Some(s) = media.get_mut("schema") {
                no_nul(s);
            }
        }
    }
    let responses = op.get_mut("responses").and_then(Value::as_object_mut).map(std::mem::take).unwrap_or_default();
    let mut responses = responses;
    let mut add = |status: &str, what: &str| {
        responses.entry(status.to_string()).or_insert_with(|| error_response(what));
    };
    add("401", "unauthorized: no key, or a malformed, unknown or revoked one");
    if json_body {
        add("400", "invalid_json / invalid_body: the body is not JSON or could not be read");
        add("413", "body_too_large: a JSON body over 1 MiB");
        add("422", "invalid_request: a value the schema does not allow");
    }
    if query {
        add("400", "invalid_query: an unknown or malformed query parameter");
        add("422", "invalid_request: a value the schema does not allow");
    }
    if path {
        add("404", "not_found: no such object in the caller's org");
    }
    // What a box's runner may answer for the box (reads fall back to the record instead).
    if path_template.starts_with("/v1/boxes") && (method != "get" || path_template.ends_with("/files")) {
        add("502", "runner_error / boot_failed: the box's runner failed the call");
        if method == "post" || method == "put" {
            add("429", "runner_busy: the runner is out of a resource (`retry_after`)");
        }
    }
    add("500", "internal: a bug or an unexpected database error (the body names the request id)");
    add("503", "database_unavailable (or another dependency): retry after `retry_after` seconds");
    for r in responses.values_mut() {
        if let Value::Object(m) = r {
            let headers = m.entry("headers").or_insert_with(|| json!({}));
            headers["x-request-id"] = json!({
                "description": "The request's id: the client's `x-request-id` when it sent a usable one, else a new one",
                "schema": {"type": "string"}
            });
        }
    }
    op["responses"] = Value::Object(responses);
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds the NUL rule to every string schema under `s` that has no pattern, format, enum or const of its own, and to
/// the keys of every map.
pub fn no_nul(s: &mut Value) {
    let Value::Object(m) = s else { return };
    let is_string = match m.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    let constrained = ["pattern", "format", "enum", "const"].iter().any(|k| m.contains_key(*k));
    if is_string && !constrained {
        m.insert("pattern".into(), Value::String(NO_NUL.into()));
    }
    if matches!(m.get("additionalProperties"), Some(Value::Object(_))) && !m.contains_key("propertyNames") {
        m.insert("propertyNames".into(), json!({"type": "string", "pattern": NO_NUL}));
    }
    for key in ["items", "additionalProperties", "propertyNames", "not"] {
        if let Some(sub) = m.get_mut(key) {
            no_nul(sub);
        }
    }
    for key in ["properties", "$defs"] {
        if let Some(Value::Object(props)) = m.get_mut(key) {
            props.values_mut().for_each(no_nul);
        }
    }
    for key in ["prefixItems", "oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(subs)) = m.get_mut(key) {
            subs.iter_mut().for_each(no_nul);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> &'static Value {
        contract().document()
    }

    fn operations() -> Vec<(String, String, &'static Value)> {
        let mut out = vec![];
        for (path, item) in doc()["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op));
            }
        }
        out
    }

    fn params<'a>(op: &'a Value, place: &str) -> Vec<&'a Value> {
        op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == place).collect()
    }

    #[test]
    fn path_parameters_are_the_ones_in_the_path_and_every_other_is_a_query_or_header_parameter() {
        for (method, path, op) in operations() {
            for p in params(op, "path") {
                let name = p["name"].as_str().unwrap();
                assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: {name} is not in the path");
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(["path", "query", "header"].contains(&p["in"].as_str().unwrap()), "{method} {path}: {p}");
            }
        }
        let list = &doc()["paths"]["/v1/boxes"]["get"];
        let names: Vec<&str> = params(list, "query").iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["limit", "cursor", "state", "label"]);
        assert!(params(list, "query").iter().all(|p| p["required"] == false));
    }

    #[test]
    fn every_operation_documents_the_statuses_every_request_can_get() {
        for (method, path, op) in operations() {
            let r = &op["responses"];
            for status in ["401", "500", "503"] {
                assert!(r[status].is_object(), "{method} {path} does not document {status}");
            }
            if op.pointer("/requestBody/content/application~1json").is_some() {
                for status in ["400", "413", "422"] {
                    assert!(r[status].is_object(), "{method} {path} (JSON body) does not document {status}");
                }
            }
            if !params(op, "query").is_empty() {
                assert!(r["400"].is_object() && r["422"].is_object(), "{method} {path} (query) lacks 400/422");
            }
            if !params(op, "path").is_empty() {
                assert!(r["404"].is_object(), "{method} {path} (path ids) does not document 404");
            }
            for (status, resp) in r.as_object().unwrap() {
                assert!(resp["headers"]["x-request-id"].is_object(), "{method} {path} {status}: no x-request-id");
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }

    #[test]
    fn binary_bodies_are_binary_strings() {
        let d = doc();
        let binary = json!({"type": "string", "format": "binary"});
        let resolve = |s: &Value| -> Value {
            match s["$ref"].as_str() {
                Some(r) => d.pointer(&r[1..]).unwrap().clone(),
                None => s.clone(),
            }
        };
        let upload = &d["paths"]["/v1/boxes/{id}/files"]["put"]["requestBody"]["content"];
        assert_eq!(resolve(&upload["application/x-tar"]["schema"]), binary);
        assert_eq!(resolve(&upload["application/octet-stream"]["schema"]), binary);
        let download = &d["paths"]["/v1/boxes/{id}/files"]["get"]["responses"]["200"]["content"];
        assert_eq!(resolve(&download["application/x-tar"]["schema"]), binary);
        let image = &d["paths"]["/v1/snapshots/{id}/image"]["put"]["requestBody"]["content"];
        assert_eq!(resolve(&image["application/octet-stream"]["schema"]), binary);
    }

    #[test]
    fn a_body_that_may_be_empty_is_not_required_and_one_that_may_not_is() {
        let body = |p: &str, m: &str| doc()["paths"][p][m]["requestBody"]["required"].clone();
        assert_eq!(body("/v1/boxes", "post"), false, "CreateBox has no required field");
        assert_eq!(body("/v1/admin/join-tokens", "post"), false);
        assert_eq!(body("/v1/keys", "post"), true, "CreateKey needs a name");
        assert_eq!(body("/v1/boxes/{id}/executions/{eid}/signal", "post"), true);
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (method, path, op) in operations() {
            let id = op["operationId"].as_str().unwrap();
            assert!(seen.insert(id.to_string()), "{method} {path}: operationId {id} repeats");
        }
        assert!(seen.contains("boxes_create") && seen.contains("admin_delete_org"));
    }

    /// Every string a request can carry has a pattern, format or enum: none can hold a NUL byte.
    #[test]
    fn no_request_string_is_unconstrained() {
        fn walk(s: &Value, at: &str) {
            let Value::Object(m) = s else { return };
            let is_string = match m.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string {
                assert!(
                    ["pattern", "format", "enum", "const"].iter().any(|k| m.contains_key(*k)),
                    "{at}: a string without a pattern"
                );
            }
            for (k, v) in m {
                match v {
                    Value::Object(_) => walk(v, &format!("{at}.{k}")),
                    Value::Array(a) => a.iter().for_each(|x| walk(x, &format!("{at}.{k}[]"))),
                    _ => {}
                }
            }
        }
        walk(&doc()["components"]["schemas"], "components");
        for (method, path, op) in operations() {
            walk(&op["parameters"], &format!("{method} {path} parameters"));
            walk(&op["requestBody"], &format!("{method} {path} body"));
        }
    }

    fn check(method: Method, path: &str, part: Part, v: Value) -> Result<(), String> {
        contract().check(&method, path, part, &v).map_err(|e| {
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{e}");
            e.body.message
        })
    }

    #[test]
    fn requests_are_checked_against_the_document_and_the_error_names_the_field() {
        let create = |v: Value| check(Method::POST, "/v1/boxes", Part::Body, v);
        assert!(create(json!({})).is_ok());
        assert!(create(json!({"vcpus": 256, "memory_mib": 64, "name": "n", "env": {"A": "1"}})).is_ok());
        let e = create(json!({"name": "a\u{0}b"})).unwrap_err();
        assert_eq!(e, "invalid request: name must not contain a NUL byte (no string in this API may)");
        let e = create(json!({"env": {"A\u{0}": "x"}})).unwrap_err();
        assert!(e.starts_with("invalid request: env has a key with a NUL byte"), "{e}");
        let e = create(json!({"env": {"A=B": "x"}})).unwrap_err();
        assert!(e.starts_with("invalid request: env has a key that is not allowed"), "{e}");
        let e = create(json!({"labels": {"k": "v\u{0}"}})).unwrap_err();
        assert_eq!(e, "invalid request: labels.k must not contain a NUL byte (no string in this API may)");
        let e = create(json!({"vcpus": 257})).unwrap_err();
        assert!(e.starts_with("invalid request: vcpus 257 is greater than the maximum of 256"), "{e}");
        assert!(create(json!({"bogus": 1})).is_err(), "unknown fields are refused");

        let key = |v: Value| check(Method::POST, "/v1/keys", Part::Body, v);
        for role in [json!(0), json!(true), json!({}), json!([]), json!("root")] {
            let e = key(json!({"name": "x", "role": role})).unwrap_err();
            assert!(e.starts_with("invalid request: role "), "{e}");
        }
        assert!(key(json!({"name": "x", "role": "admin"})).is_ok());
        assert!(key(json!({"name": ""})).is_err());

        let exec = |v: Value| check(Method::POST, "/v1/boxes/{id}/executions", Part::Body, v);
        assert!(exec(json!({"command": []})).is_ok(), "empty: the snapshot's default");
        assert!(exec(json!({"command": ["sh", ""]})).is_ok(), "empty arguments are fine");
        assert!(exec(json!({"command": [""]})).is_err(), "the program must be named");
        assert!(exec(json!({"command": ["a\u{0}"]})).is_err());
        assert!(exec(json!({"tty": {"rows": 0, "cols": 1}})).is_err());

        let signal =
            |s: &str| check(Method::POST, "/v1/boxes/{id}/executions/{eid}/signal", Part::Body, json!({"signal": s}));
        assert!(signal("TERM").is_ok() && signal("SIGKILL").is_ok() && signal("9").is_ok());
        assert!(signal("BOGUS").is_err() && signal("64").is_err());

        let list = |v: Value| check(Method::GET, "/v1/boxes", Part::Query, v);
        assert!(list(json!({"limit": 200, "state": "running", "label": "a=b"})).is_ok());
        let e = list(json!({"limit": 0})).unwrap_err();
        assert_eq!(e, "invalid request: query parameter limit 0 is less than the minimum of 1");
        assert!(list(json!({"state": "sleeping"})).is_err());
        assert!(list(json!({"cursor": "not-a-uuid"})).is_err());
        assert!(list(json!({"label": "novalue"})).is_err());
    }

    #[test]
    fn an_operation_without_a_documented_schema_is_a_bug_not_a_pass() {
        let e = contract().check(&Method::GET, "/v1/nowhere", Part::Body, &json!({})).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// Writes the served document to `BOXYARD_DUMP_OPENAPI` (to read it without a running control plane).
    #[test]
    #[ignore = "a tool, not a check: BOXYARD_DUMP_OPENAPI=FILE cargo test -p boxyard-controlplane dump -- --ignored"]
    fn dump() {
        let p = std::env::var("BOXYARD_DUMP_OPENAPI").expect("set BOXYARD_DUMP_OPENAPI to the file to write");
        std::fs::write(p, serde_json::to_string_pretty(doc()).unwrap()).unwrap();
    }
}
