//! Real components for the whole-system tests: a throwaway Postgres cluster, `boxyard-controlplane serve`
//! replicas, `boxyard-runner serve` processes (local backend) that register with a join token (all started by
//! boxyard-devstack), an HTTP client with an API key, and a WebSocket attach client that reassembles output by cursor.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxyard_api::attach::{ClientMessage, ExitResult, OutputFrame, OutputStream, ServerMessage};
use boxyard_api::error::codes;
use boxyard_devstack::postgres::{Cluster, Settings, StopMode, TempCluster};
use boxyard_devstack::{controlplane, runner};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The platform admin key every test control plane is bootstrapped with.
pub const ADMIN_KEY: &str = "byk_0123456789ab_000000000000000000000000000000000000000000000001";

/// A dev-stack result, or the test fails with its error (which quotes the logs).
fn ok<T>(r: boxyard_devstack::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A private Postgres cluster on a free loopback port, removed on drop.
pub struct Pg(TempCluster);

impl Pg {
    pub fn start() -> Pg {
        Pg(ok(TempCluster::start()))
    }

    /// Starts the (stopped) server again on the same port.
    pub fn up(&self) {
        ok(self.0.start(Settings::Throwaway, Duration::from_secs(30)));
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn down(&self) {
        ok(self.0.stop(StopMode::Fast));
    }
}

impl std::ops::Deref for Pg {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.0
    }
}

/// A built Boxyard binary (build the workspace first: cargo build --workspace).
pub fn bin(name: &str) -> PathBuf {
    ok(boxyard_devstack::paths::binary(name))
}

/// A control-plane replica.
pub struct Cp {
    pub api: String,
    pub registry: String,
    inner: controlplane::ControlPlane,
    _dir: tempfile::TempDir,
}

impl Cp {
    pub fn start(pg: &Pg, extra: &[&str]) -> Cp {
        let dir = tempfile::Builder::new().prefix("boxyard-cp-").tempdir().unwrap();
        // The test timings, except those the test sets itself.
        let defaults = [
            ("--heartbeat-interval", "500ms"),
            ("--runner-unresponsive-after", "3s"),
            ("--runner-lost-after", "6s"),
            ("--reconcile-interval", "300ms"),
        ];
        let mut args: Vec<String> = defaults
            .into_iter()
            .filter(|(k, _)| !extra.contains(k))
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let spec = controlplane::Spec {
            program: bin("boxyard-controlplane"),
            database_url: pg.url(),
            listen: "127.0.0.1:0".into(),
            registry_listen: "127.0.0.1:0".into(),
            bootstrap_key: ADMIN_KEY.into(),
            args,
            log_filter: Some("info,boxyard_controlplane=debug,sqlx=warn".into()),
        };
        let inner = ok(controlplane::ControlPlane::start(spec, dir.path()));
        Cp { api: inner.addrs.api.clone(), registry: inner.addrs.registry.clone(), inner, _dir: dir }
    }

    /// Restarts the process on the same addresses.
    pub fn restart(&mut self) {
        ok(self.inner.restart());
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    pub fn admin(&self) -> Api {
        Api::new(&self.api, ADMIN_KEY)
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    boxyard_devstack::paths::workspace()
}

/// A runner process (local backend unless `--backend` is among the extra arguments) registered with a control
/// plane. Dropping it kills it and its boxes.
pub struct Runner {
    pub name: String,
    pub state: PathBuf,
    inner: runner::Runner,
    _tmp: tempfile::TempDir,
}

impl Runner {
    /// Starts a runner offering `vcpus` and `memory` (e.g. "4GiB"), registered with `join_token`.
    pub fn start(cp: &Cp, name: &str, join_token: &str, vcpus: u32, memory: &str, extra: &[&str]) -> Runner {
        let tmp = tempfile::Builder::new().prefix("boxyard-runner-").tempdir().unwrap();
        let mut args: Vec<String> = Vec::new();
        if !extra.contains(&"--backend") {
            args.extend(["--backend".into(), "local".into()]);
        }
        args.extend([
            "--controlplane".into(),
            cp.registry.clone(),
            "--join-token".into(),
            join_token.into(),
            "--name".into(),
            name.into(),
            "--capacity-vcpus".into(),
            vcpus.to_string(),
            "--capacity-memory".into(),
            memory.into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let spec = runner::Spec {
            program: bin("boxyard-runner"),
            state_dir: tmp.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            args,
            log_filter: Some("info,boxyard_runner=debug".into()),
        };
        let inner = ok(runner::Runner::start(spec));
        Runner { name: name.into(), state: tmp.path().to_path_buf(), inner, _tmp: tmp }
    }

    /// Starts the process again on the same state directory.
    pub fn spawn(&mut self) {
        ok(self.inner.restart());
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// Sends `sig` to the runner process (e.g. SIGSTOP to freeze it as a hung host would be).
    pub fn signal(&self, sig: i32) {
        let pid = self.inner.pid().expect("the runner runs");
        assert!(boxyard_devstack::process::signal(pid as i32, sig), "kill({pid}, {sig})");
    }

    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    /// Kills the runner and the local agents of its boxes (as if the host died).
    pub fn kill_host(&mut self) {
        self.inner.kill_host();
    }
}

/// An HTTP client holding one API key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    http: reqwest::Client,
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn ok(&self) -> &Value {
        assert!((200..300).contains(&self.status), "expected success, got {}: {}", self.status, self.body);
        &self.body
    }

    /// Asserts an error response with a code and a message.
    pub fn err(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        assert_eq!(self.body["code"], code, "unexpected code; body: {}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {}", self.body);
        &self.body
    }
}

impl Api {
    pub fn new(base: &str, key: &str) -> Api {
        Api { base: base.into(), key: key.into(), http: reqwest::Client::builder().build().unwrap() }
    }

    pub fn with_key(&self, key: &str) -> Api {
        Api { key: key.into(), ..self.clone() }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}{}", self.base, path)).bearer_auth(&self.key);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        Self::read(r).await
    }

    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>, content_type: &str) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self
            .http
            .request(m, format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp { status, body, headers }
    }

    pub async fn bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self.http.get(format!("{}{}", self.base, path)).bearer_auth(&self.key).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send("POST", path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None, &[]).await
    }

    /// Creates an org with a generous quota and returns (org id, admin key of that org).
    pub async fn org(&self, name: &str) -> (String, Api) {
        let org = self
            .post(
                "/v1/admin/orgs",
                json!({"name": name, "quota": {"max_boxes": 50, "max_vcpus": 100, "max_memory_mib": 1048576,
                    "max_box_vcpus": 8, "max_box_memory_mib": 65536, "max_box_disk_mib": 65536}}),
            )
            .await;
        let id = org.ok()["id"].as_str().unwrap().to_string();
        let key = self.post(&format!("/v1/admin/orgs/{id}/keys"), json!({"name": "admin", "role": "admin"})).await;
        let secret = key.ok()["secret"].as_str().unwrap().to_string();
        (id, self.with_key(&secret))
    }

    pub async fn join_token(&self) -> String {
        self.post("/v1/admin/join-tokens", json!({"description": "test"})).await.ok()["secret"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until `n` runners are ready.
    pub async fn wait_runners(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get("/v1/admin/runners").await;
            let ready = r.body["items"].as_array().map_or(0, |a| a.iter().filter(|x| x["state"] == "ready").count());
            if ready >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{n} runners did not become ready: {}", r.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a running box (waits) and returns its id.
    pub async fn create_box(&self, body: Value) -> String {
        let r = self.post("/v1/boxes", body).await;
        assert_eq!(r.status, 201, "create failed: {}", r.body);
        assert_eq!(r.body["state"], "running");
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Starts a command; returns the execution id.
    pub async fn exec(&self, box_id: &str, cmd: &[&str]) -> String {
        let r = self.post(&format!("/v1/boxes/{box_id}/executions"), json!({"command": cmd})).await;
        assert_eq!(r.status, 201, "exec failed: {}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Polls an execution until it is no longer running.
    pub async fn wait_execution(&self, box_id: &str, eid: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/v1/boxes/{box_id}/executions/{eid}")).await;
            if r.ok()["state"] != "running" {
                return r.body;
            }
            assert!(Instant::now() < deadline, "execution still running: {}", r.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ws_url(&self, box_id: &str, eid: &str, cursor: u64) -> String {
        format!("{}/v1/boxes/{box_id}/executions/{eid}/attach?cursor={cursor}", self.base.replacen("http", "ws", 1))
    }
}

/// Output reassembled from attach frames; asserts that cursors are contiguous (no loss, no duplicate).
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The cursor after the last byte received.
    pub next: u64,
    pub exit: Option<Value>,
    pub gaps: Vec<(u64, u64)>,
}

impl Output {
    /// A binary frame, decoded with the API contract's codec.
    fn frame(&mut self, data: bytes::Bytes) {
        let f = OutputFrame::decode(data).unwrap_or_else(|e| panic!("bad binary frame: {e}"));
        assert_eq!(f.cursor, self.next, "cursor discontinuity: expected {}, got {}", self.next, f.cursor);
        match f.stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(&f.data),
            OutputStream::Stderr => self.stderr.extend_from_slice(&f.data),
        }
        self.next = f.end();
    }

    /// The `exit` message as JSON (what the tests look into).
    fn exit(&mut self, x: ExitResult) {
        self.exit = Some(serde_json::to_value(ServerMessage::Exit(x)).unwrap());
    }
}

/// Attaches from `out.next` and reads until exit, or until `cut_after` more bytes arrived (then drops the socket
/// without a close handshake). Returns true when the exit message arrived.
pub async fn attach(api: &Api, box_id: &str, eid: &str, out: &mut Output, cut_after: Option<u64>) -> bool {
    let mut req = api.ws_url(box_id, eid, out.next).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", api.key).parse().unwrap());
    let mut ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        // The gateway or the runner may be restarting (connection refused, 503): the caller attaches again.
        Err(tokio_tungstenite::tungstenite::Error::Io(_)) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return false;
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503 => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return false;
        }
        Err(e) => panic!("attach handshake: {e}"),
    };
    let start = out.next;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.expect("attach stalled for 60 s")
    {
        let Ok(m) = m else {
            // Cut (the gateway or the runner went away): the caller resumes from out.next.
            return false;
        };
        match m {
            Message::Binary(b) => {
                out.frame(b);
                if cut_after.is_some_and(|n| out.next - start >= n) {
                    drop(ws);
                    return false;
                }
            }
            Message::Text(t) => match ServerMessage::decode(t.as_str()).unwrap() {
                ServerMessage::Exit(x) => {
                    out.exit(x);
                    let _ = ws.close(None).await;
                    return true;
                }
                // The runner went away: resume from out.next.
                ServerMessage::Error { code, .. }
                    if code == codes::RUNNER_UNAVAILABLE || code == codes::RUNNER_CLOSED =>
                {
                    return false;
                }
                ServerMessage::Gap { from, to } => {
                    assert_eq!(from, out.next);
                    out.gaps.push((from, to));
                    out.next = to;
                }
                m => panic!("unexpected attach message {m:?}"),
            },
            Message::Close(_) => return false,
            _ => {}
        }
    }
    false
}

/// Attaches and sends `input` as stdin then EOF, collecting output until exit.
pub async fn attach_with_stdin(api: &Api, box_id: &str, eid: &str, input: &[u8]) -> Output {
    let mut req = api.ws_url(box_id, eid, 0).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", api.key).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("attach handshake");
    ws.send(Message::Binary(input.to_vec().into())).await.unwrap();
    ws.send(Message::Text(ClientMessage::StdinEof.encode().into())).await.unwrap();
    let mut out = Output::default();
    while let Some(m) = ws.next().await {
        match m.unwrap() {
            Message::Binary(b) => out.frame(b),
            Message::Text(t) => {
                if let ServerMessage::Exit(x) = ServerMessage::decode(t.as_str()).unwrap() {
                    out.exit(x);
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

/// The value of a metric line in a Prometheus text exposition, e.g. `boxyard_reconciler_leader`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

pub async fn metrics(cp: &Cp) -> String {
    reqwest::get(format!("{}/metrics", cp.api)).await.unwrap().text().await.unwrap()
}

/// A fleet for one test: Postgres, one control plane, runners with the given (name, vCPUs).
pub struct Stack {
    pub pg: Pg,
    pub cp: Cp,
    pub admin: Api,
    pub runners: Vec<Runner>,
}

impl Stack {
    pub async fn start(runners: &[(&str, u32)]) -> Stack {
        let pg = Pg::start();
        let cp = Cp::start(&pg, &[]);
        let admin = cp.admin();
        let token = admin.join_token().await;
        let runners: Vec<Runner> =
            runners.iter().map(|(n, v)| Runner::start(&cp, n, &token, *v, "8GiB", &[])).collect();
        admin.wait_runners(runners.len()).await;
        Stack { pg, cp, admin, runners }
    }
}

/// An embedded S3 endpoint for a test (in this process, on loopback) and the flags that point a control plane or a
/// runner at it.
pub struct S3(boxyard_devstack::s3::Embedded);

pub const S3_BUCKET: &str = "snaps";

impl S3 {
    pub async fn start() -> S3 {
        S3(ok(boxyard_devstack::s3::Embedded::start(S3_BUCKET, "ak", "sk").await))
    }

    pub fn args(&self) -> Vec<String> {
        self.0.endpoint.args()
    }

    /// The file holding an object.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.0.object_path(key)
    }

    pub fn store(&self) -> boxyard_snapshot::s3::S3Store {
        boxyard_snapshot::s3::S3Store::new(&boxyard_snapshot::s3::S3Config {
            endpoint: Some(self.0.endpoint.url.clone()),
            bucket: S3_BUCKET.into(),
            access_key: Some("ak".into()),
            secret_key: Some("sk".into()),
            path_style: true,
            ..Default::default()
        })
        .unwrap()
    }
}

impl Stack {
    /// A stack whose control plane and runners use `s3` for snapshots; `runner_args` go to every runner.
    pub async fn with_s3(s3: &S3, runners: &[(&str, u32)], runner_args: &[&str]) -> Stack {
        let pg = Pg::start();
        let s3args = s3.args();
        let cp_args: Vec<&str> = s3args.iter().map(|s| s.as_str()).collect();
        let cp = Cp::start(&pg, &cp_args);
        let admin = cp.admin();
        let token = admin.join_token().await;
        let mut rargs = cp_args.clone();
        rargs.extend_from_slice(runner_args);
        let runners: Vec<Runner> =
            runners.iter().map(|(n, v)| Runner::start(&cp, n, &token, *v, "8GiB", &rargs)).collect();
        admin.wait_runners(runners.len()).await;
        Stack { pg, cp, admin, runners }
    }
}

impl Runner {
    /// The metrics endpoint (the runner must run with --metrics-listen).
    pub fn metrics_addr(&self) -> String {
        let log = self.log();
        log.lines()
            .find_map(|l| l.split("metrics on http://").nth(1))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("no metrics address in the runner log:\n{log}"))
            .to_string()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr())).await.unwrap().text().await.unwrap()
    }

    /// Digests (hex) of the snapshot images in the runner's cache.
    pub fn cached_images(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state.join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".ext4").map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

impl Api {
    /// Registers a snapshot and uploads `image`; returns the snapshot as the API shows it.
    pub async fn snapshot(&self, name: &str, image: &Path, metadata: Value) -> Value {
        let r = self.post("/v1/snapshots", json!({"name": name, "metadata": metadata})).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.body["state"], "uploading");
        let up = self
            .raw("PUT", &format!("/v1/snapshots/{id}/image"), std::fs::read(image).unwrap(), "application/octet-stream")
            .await;
        assert_eq!(up.status, 200, "{}", up.body);
        assert_eq!(up.body["state"], "active");
        up.body
    }
}

/// A small image: a tree with /etc/hostname = `tag` and a file of `extra` bytes (to vary sizes).
pub fn tiny_image(dir: &Path, tag: &str, extra: usize) -> PathBuf {
    let tree = dir.join(format!("tree-{tag}"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), format!("{tag}\n")).unwrap();
    std::fs::write(tree.join("etc/blob"), vec![7u8; extra]).unwrap();
    let out = dir.join(format!("{tag}.ext4"));
    boxyard_snapshot::image::build_from_dir(&tree, &out).unwrap();
    out
}
