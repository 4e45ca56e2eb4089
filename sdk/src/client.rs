//! The REST client.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::attach::{Attach, Event, OutputStream, Retry};
use crate::error::{Error, Result};
use crate::types::*;

/// A client of one Boxyard API with one API key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
    retry: Retry,
}

impl Client {
    /// `base`: the API's URL (e.g. `https://boxyard.example` or `http://127.0.0.1:8080`); `key`: an API key.
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        let base = base.into().trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|e| Error::Transport { url: base.clone(), message: format!("bad URL: {e}") })?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Transport { url: base.clone(), message: e.to_string() })?;
        Ok(Client { base, key: key.into(), http, retry: Retry::default() })
    }

    /// The reconnection policy of attaches.
    pub fn with_attach_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<reqwest::Body>,
        json: bool,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            rb = rb.header("content-type", if json { "application/json" } else { "application/octet-stream" }).body(b);
        }
        let resp = rb.send().await.map_err(|e| Error::Transport { url: self.base.clone(), message: e.to_string() })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or_default();
        Err(Error::Api {
            status,
            code: v["code"].as_str().unwrap_or("http_error").to_string(),
            message: v["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}")),
            retry_after: v["retry_after"].as_u64(),
        })
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<T> {
        let body = body.map(|b| reqwest::Body::from(serde_json::to_vec(b).expect("serializable")));
        let resp = self.send(method, path, body, true).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null).map_err(|e| Error::Protocol(e.to_string()));
        }
        resp.json().await.map_err(|e| Error::Protocol(format!("{path}: {e}")))
    }

    async fn none(&self, method: Method, path: &str) -> Result<()> {
        self.send(method, path, None, true).await.map(|_| ())
    }

    // --- the caller -----------------------------------------------------------------------------------------------

    pub async fn me(&self) -> Result<Me> {
        self.call(Method::GET, "/v1/me", None::<&()>).await
    }

    pub async fn config(&self) -> Result<Value> {
        self.call(Method::GET, "/v1/config", None::<&()>).await
    }

    // --- boxes ----------------------------------------------------------------------------------------------------

    /// Creates a box and waits until it runs.
    pub async fn create_box(&self, req: &CreateBox) -> Result<BoxInfo> {
        self.call(Method::POST, "/v1/boxes", Some(req)).await
    }

    /// One page of boxes (`cursor`: the previous page's `next_cursor`).
    pub async fn list_boxes(&self, cursor: Option<&str>) -> Result<Page<BoxInfo>> {
        let q = cursor.map(|c| format!("?cursor={c}")).unwrap_or_default();
        self.call(Method::GET, &format!("/v1/boxes{q}"), None::<&()>).await
    }

    pub async fn get_box(&self, id: &str) -> Result<BoxInfo> {
        self.call(Method::GET, &format!("/v1/boxes/{id}"), None::<&()>).await
    }

    pub async fn start_box(&self, id: &str) -> Result<BoxInfo> {
        self.call(Method::POST, &format!("/v1/boxes/{id}/start"), Some(&serde_json::json!({}))).await
    }

    pub async fn stop_box(&self, id: &str) -> Result<BoxInfo> {
        self.call(Method::POST, &format!("/v1/boxes/{id}/stop"), Some(&serde_json::json!({}))).await
    }

    pub async fn delete_box(&self, id: &str) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/boxes/{id}")).await
    }

    // --- executions -----------------------------------------------------------------------------------------------

    /// Starts a command in a box (returns at once).
    pub async fn exec(&self, box_id: &str, req: &ExecRequest) -> Result<Execution> {
        self.call(Method::POST, &format!("/v1/boxes/{box_id}/executions"), Some(req)).await
    }

    pub async fn list_executions(&self, box_id: &str, cursor: Option<&str>) -> Result<Page<Execution>> {
        let q = cursor.map(|c| format!("?cursor={c}")).unwrap_or_default();
        self.call(Method::GET, &format!("/v1/boxes/{box_id}/executions{q}"), None::<&()>).await
    }

    pub async fn get_execution(&self, box_id: &str, exec_id: &str) -> Result<Execution> {
        self.call(Method::GET, &format!("/v1/boxes/{box_id}/executions/{exec_id}"), None::<&()>).await
    }

    pub async fn kill(&self, box_id: &str, exec_id: &str) -> Result<Execution> {
        self.call(Method::POST, &format!("/v1/boxes/{box_id}/executions/{exec_id}/kill"), Some(&serde_json::json!({})))
            .await
    }

    pub async fn signal(&self, box_id: &str, exec_id: &str, signal: &str) -> Result<()> {
        let body = reqwest::Body::from(serde_json::json!({ "signal": signal }).to_string());
        self.send(Method::POST, &format!("/v1/boxes/{box_id}/executions/{exec_id}/signal"), Some(body), true)
            .await
            .map(|_| ())
    }

    pub async fn resize(&self, box_id: &str, exec_id: &str, size: TtySize) -> Result<()> {
        let body = reqwest::Body::from(serde_json::to_vec(&size).expect("serializable"));
        self.send(Method::POST, &format!("/v1/boxes/{box_id}/executions/{exec_id}/resize"), Some(body), true)
            .await
            .map(|_| ())
    }

    /// Attaches to an execution's output from `from` (0: the beginning). The attach resumes by itself after cuts.
    pub fn attach(&self, box_id: &str, exec_id: &str, from: u64) -> Attach {
        let ws = self.base.replacen("http", "ws", 1);
        Attach::new(format!("{ws}/v1/boxes/{box_id}/executions/{exec_id}/attach"), self.key.clone(), from, self.retry)
    }

    /// Runs a command to completion: its stdout, stderr and exit result.
    pub async fn run(&self, box_id: &str, req: &ExecRequest) -> Result<RunOutput> {
        let x = self.exec(box_id, req).await?;
        let mut a = self.attach(box_id, &x.id, 0);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(ev) = a.next().await {
            match ev? {
                Event::Output { stream: OutputStream::Stdout, data, .. } => stdout.extend_from_slice(&data),
                Event::Output { stream: OutputStream::Stderr, data, .. } => stderr.extend_from_slice(&data),
                Event::Gap { .. } => {}
                Event::Exit(exit) => return Ok(RunOutput { stdout, stderr, exit }),
            }
        }
        Err(Error::Protocol("the attach ended without an exit message".into()))
    }

    // --- files ----------------------------------------------------------------------------------------------------

    /// Unpacks a tar archive into the directory `dest` of a box.
    pub async fn upload_tar(&self, box_id: &str, dest: &str, tar: impl Into<reqwest::Body>) -> Result<Value> {
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("path", dest).finish();
        let resp = self.send(Method::PUT, &format!("/v1/boxes/{box_id}/files?{q}"), Some(tar.into()), false).await?;
        resp.json().await.map_err(|e| Error::Protocol(e.to_string()))
    }

    /// A tar archive of the file or directory `path` of a box.
    pub async fn download_tar(&self, box_id: &str, path: &str) -> Result<bytes::Bytes> {
        let q = url::form_urlencoded::Serializer::new(String::new()).append_pair("path", path).finish();
        let resp = self.send(Method::GET, &format!("/v1/boxes/{box_id}/files?{q}"), None, false).await?;
        resp.bytes().await.map_err(|e| Error::Transport { url: self.base.clone(), message: e.to_string() })
    }

    // --- snapshots ------------------------------------------------------------------------------------------------

    /// Registers a snapshot (then upload its image with [`Client::upload_snapshot_image`]).
    pub async fn create_snapshot(&self, name: &str, metadata: &SnapshotMetadata, public: bool) -> Result<Snapshot> {
        let body = serde_json::json!({"name": name, "metadata": metadata, "public": public});
        self.call(Method::POST, "/v1/snapshots", Some(&body)).await
    }

    /// Streams an image into a snapshot (`image`: a `reqwest::Body`, e.g. from a file stream).
    pub async fn upload_snapshot_image(&self, id: &str, image: impl Into<reqwest::Body>) -> Result<Snapshot> {
        let resp = self.send(Method::PUT, &format!("/v1/snapshots/{id}/image"), Some(image.into()), false).await?;
        resp.json().await.map_err(|e| Error::Protocol(e.to_string()))
    }

    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let p: Page<Snapshot> = self.call(Method::GET, "/v1/snapshots", None::<&()>).await?;
        Ok(p.items)
    }

    pub async fn get_snapshot(&self, id: &str) -> Result<Snapshot> {
        self.call(Method::GET, &format!("/v1/snapshots/{id}"), None::<&()>).await
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/snapshots/{id}")).await
    }

    // --- administration (keys, orgs, quotas, runners, join tokens) --------------------------------------------------

    /// Any other endpoint, as JSON: `admin(Method::POST, "/v1/admin/join-tokens", Some(json!({})))`.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let resp = self.send(method, path, body.map(|b| reqwest::Body::from(b.to_string())), true).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        resp.json().await.map_err(|e| Error::Protocol(e.to_string()))
    }
}
