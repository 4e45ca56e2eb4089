//! The REST client: one typed method per endpoint of the API (boxes, executions, files, snapshots, keys and the
//! platform administration), plus [`Client::call_raw`] for scripts that need any endpoint as JSON.
//!
//! Ids are taken as anything printable (`&str`, `String`, `Uuid`), so an id read from the user and one from a
//! response go in alike.

use std::fmt::Display;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::attach::{Attach, Event, OutputStream, Retry};
use crate::body::Body;
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

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client").field("base", &self.base).field("retry", &self.retry).finish_non_exhaustive()
    }
}

/// What a request carries.
enum Payload {
    None,
    Json(Vec<u8>),
    Bytes(Body),
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

    /// The API's URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(&self, method: Method, path: &str, payload: Payload) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method, &url).bearer_auth(&self.key);
        match payload {
            Payload::None => {}
            Payload::Json(b) => rb = rb.header("content-type", "application/json").body(b),
            Payload::Bytes(b) => rb = rb.header("content-type", "application/octet-stream").body(b.0),
        }
        let resp = rb.send().await.map_err(|e| self.transport(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        Err(Error::from_response(status, &body))
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        Error::Transport { url: self.base.clone(), message: e.to_string() }
    }

    /// A JSON response as `T`.
    async fn read<T: DeserializeOwned>(&self, path: &str, resp: reqwest::Response) -> Result<T> {
        let body = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol(format!("{path}: {e}")))
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<T> {
        let payload = match body {
            Some(b) => Payload::Json(serde_json::to_vec(b).map_err(|e| Error::InvalidInput(e.to_string()))?),
            None => Payload::None,
        };
        let resp = self.send(method, path, payload).await?;
        self.read(path, resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// A POST with an empty JSON object as its body (the actions: start, stop, kill, cordon, ...).
    async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::POST, path, Some(&serde_json::Map::new())).await
    }

    /// A call answered with 204 No Content (or a body that does not matter).
    async fn none(&self, method: Method, path: &str) -> Result<()> {
        self.send(method, path, Payload::None).await.map(|_| ())
    }

    // --- the caller -----------------------------------------------------------------------------------------------

    /// The caller: its key, org and role (`GET /v1/me`).
    pub async fn me(&self) -> Result<Me> {
        self.get("/v1/me").await
    }

    /// The platform's version and defaults, and the caller's quota (`GET /v1/config`).
    pub async fn config(&self) -> Result<PlatformConfig> {
        self.get("/v1/config").await
    }

    // --- boxes ----------------------------------------------------------------------------------------------------

    /// Creates a box and waits until it runs.
    pub async fn create_box(&self, req: &CreateBox) -> Result<BoxInfo> {
        self.call(Method::POST, "/v1/boxes", Some(req)).await
    }

    /// One page of boxes (`cursor`: the previous page's `next_cursor`).
    pub async fn list_boxes(&self, cursor: Option<&str>) -> Result<BoxList> {
        self.get(&format!("/v1/boxes{}", cursor_query(cursor))).await
    }

    /// A box.
    pub async fn get_box(&self, id: impl Display) -> Result<BoxInfo> {
        self.get(&format!("/v1/boxes/{id}")).await
    }

    /// Starts a stopped box and waits until it runs.
    pub async fn start_box(&self, id: impl Display) -> Result<BoxInfo> {
        self.post_empty(&format!("/v1/boxes/{id}/start")).await
    }

    /// Stops a box (its disk is kept).
    pub async fn stop_box(&self, id: impl Display) -> Result<BoxInfo> {
        self.post_empty(&format!("/v1/boxes/{id}/stop")).await
    }

    /// Deletes a box, running or not.
    pub async fn delete_box(&self, id: impl Display) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/boxes/{id}")).await
    }

    // --- executions -----------------------------------------------------------------------------------------------

    /// Starts a command in a box (returns at once).
    pub async fn exec(&self, box_id: impl Display, req: &ExecRequest) -> Result<Execution> {
        self.call(Method::POST, &format!("/v1/boxes/{box_id}/executions"), Some(req)).await
    }

    /// One page of a box's executions (`cursor`: the previous page's `next_cursor`).
    pub async fn list_executions(&self, box_id: impl Display, cursor: Option<&str>) -> Result<ExecutionList> {
        self.get(&format!("/v1/boxes/{box_id}/executions{}", cursor_query(cursor))).await
    }

    /// An execution (its result once finished).
    pub async fn get_execution(&self, box_id: impl Display, exec_id: impl Display) -> Result<Execution> {
        self.get(&format!("/v1/boxes/{box_id}/executions/{exec_id}")).await
    }

    /// Kills an execution's process group (SIGKILL).
    pub async fn kill(&self, box_id: impl Display, exec_id: impl Display) -> Result<Execution> {
        self.post_empty(&format!("/v1/boxes/{box_id}/executions/{exec_id}/kill")).await
    }

    /// Sends a signal ("INT", "SIGTERM", a number) to an execution's process group.
    pub async fn signal(&self, box_id: impl Display, exec_id: impl Display, signal: &str) -> Result<()> {
        let body = boxyard_api::SignalBody { signal: signal.to_string() };
        let payload = Payload::Json(serde_json::to_vec(&body).map_err(|e| Error::InvalidInput(e.to_string()))?);
        self.send(Method::POST, &format!("/v1/boxes/{box_id}/executions/{exec_id}/signal"), payload).await.map(|_| ())
    }

    /// Resizes an execution's terminal.
    pub async fn resize(&self, box_id: impl Display, exec_id: impl Display, size: TtySize) -> Result<()> {
        let payload = Payload::Json(serde_json::to_vec(&size).map_err(|e| Error::InvalidInput(e.to_string()))?);
        self.send(Method::POST, &format!("/v1/boxes/{box_id}/executions/{exec_id}/resize"), payload).await.map(|_| ())
    }

    /// Attaches to an execution's output from `from` (0: the beginning). The attach resumes by itself after cuts.
    pub fn attach(&self, box_id: impl Display, exec_id: impl Display, from: u64) -> Attach {
        let ws = self.base.replacen("http", "ws", 1);
        Attach::new(format!("{ws}/v1/boxes/{box_id}/executions/{exec_id}/attach"), self.key.clone(), from, self.retry)
    }

    /// Runs a command to completion: its stdout, stderr and exit result.
    pub async fn run(&self, box_id: impl Display, req: &ExecRequest) -> Result<RunOutput> {
        let box_id = box_id.to_string();
        let x = self.exec(&box_id, req).await?;
        let mut a = self.attach(&box_id, x.id, 0);
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
    pub async fn upload_tar(&self, box_id: impl Display, dest: &str, tar: impl Into<Body>) -> Result<UploadResult> {
        let path = format!("/v1/boxes/{box_id}/files?{}", path_query(dest));
        let resp = self.send(Method::PUT, &path, Payload::Bytes(tar.into())).await?;
        self.read(&path, resp).await
    }

    /// A tar archive of the file or directory `path` of a box.
    pub async fn download_tar(&self, box_id: impl Display, path: &str) -> Result<bytes::Bytes> {
        let resp =
            self.send(Method::GET, &format!("/v1/boxes/{box_id}/files?{}", path_query(path)), Payload::None).await?;
        resp.bytes().await.map_err(|e| self.transport(e))
    }

    // --- snapshots ------------------------------------------------------------------------------------------------

    /// Registers a snapshot (then upload its image with [`Client::upload_snapshot_image`]).
    pub async fn create_snapshot(&self, name: &str, metadata: &SnapshotMetadata, public: bool) -> Result<Snapshot> {
        let req = CreateSnapshot { name: name.into(), public, metadata: metadata.clone(), source: None };
        self.register_snapshot(&req).await
    }

    /// Registers a snapshot from a full request (e.g. with `source`: an image already in the bucket).
    pub async fn register_snapshot(&self, req: &CreateSnapshot) -> Result<Snapshot> {
        self.call(Method::POST, "/v1/snapshots", Some(req)).await
    }

    /// Streams an image into a snapshot (`image`: bytes, or [`Body::from_stream`] for a file read as it goes).
    pub async fn upload_snapshot_image(&self, id: impl Display, image: impl Into<Body>) -> Result<Snapshot> {
        let path = format!("/v1/snapshots/{id}/image");
        let resp = self.send(Method::PUT, &path, Payload::Bytes(image.into())).await?;
        self.read(&path, resp).await
    }

    /// The snapshots the caller can use (its org's and the published ones).
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let p: SnapshotList = self.get("/v1/snapshots").await?;
        Ok(p.items)
    }

    /// A snapshot.
    pub async fn get_snapshot(&self, id: impl Display) -> Result<Snapshot> {
        self.get(&format!("/v1/snapshots/{id}")).await
    }

    /// Deletes a snapshot that no box uses.
    pub async fn delete_snapshot(&self, id: impl Display) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/snapshots/{id}")).await
    }

    // --- keys of the caller's org (org admins) --------------------------------------------------------------------

    /// Creates a key in the caller's org; its secret is in the answer only.
    pub async fn create_key(&self, req: &CreateKey) -> Result<KeyCreated> {
        self.call(Method::POST, "/v1/keys", Some(req)).await
    }

    /// The keys of the caller's org.
    pub async fn list_keys(&self) -> Result<KeyList> {
        self.get("/v1/keys").await
    }

    /// Revokes a key of the caller's org.
    pub async fn revoke_key(&self, key_id: impl Display) -> Result<KeyView> {
        self.call(Method::DELETE, &format!("/v1/keys/{key_id}"), None::<&()>).await
    }

    // --- platform administration (platform admins) ------------------------------------------------------------------

    /// Creates an org (with the default quota unless `quota` is given).
    pub async fn create_org(&self, req: &CreateOrg) -> Result<OrgView> {
        self.call(Method::POST, "/v1/admin/orgs", Some(req)).await
    }

    /// Every org.
    pub async fn list_orgs(&self) -> Result<OrgList> {
        self.get("/v1/admin/orgs").await
    }

    /// An org.
    pub async fn get_org(&self, org_id: impl Display) -> Result<OrgView> {
        self.get(&format!("/v1/admin/orgs/{org_id}")).await
    }

    /// Deletes an org that has no boxes (but deleted ones) and no snapshots; its keys stop working.
    pub async fn delete_org(&self, org_id: impl Display) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/admin/orgs/{org_id}")).await
    }

    /// Sets an org's quota.
    pub async fn set_quota(&self, org_id: impl Display, quota: &Quota) -> Result<OrgView> {
        self.call(Method::PUT, &format!("/v1/admin/orgs/{org_id}/quota"), Some(quota)).await
    }

    /// Creates a key in any org (e.g. its first admin key); its secret is in the answer only.
    pub async fn create_org_key(&self, org_id: impl Display, req: &CreateKey) -> Result<KeyCreated> {
        self.call(Method::POST, &format!("/v1/admin/orgs/{org_id}/keys"), Some(req)).await
    }

    /// The keys of any org.
    pub async fn list_org_keys(&self, org_id: impl Display) -> Result<KeyList> {
        self.get(&format!("/v1/admin/orgs/{org_id}/keys")).await
    }

    /// Revokes a key of any org.
    pub async fn revoke_org_key(&self, org_id: impl Display, key_id: impl Display) -> Result<KeyView> {
        self.call(Method::DELETE, &format!("/v1/admin/orgs/{org_id}/keys/{key_id}"), None::<&()>).await
    }

    /// The runners of the fleet.
    pub async fn list_runners(&self) -> Result<RunnerList> {
        self.get("/v1/admin/runners").await
    }

    /// A runner.
    pub async fn get_runner(&self, runner_id: impl Display) -> Result<RunnerView> {
        self.get(&format!("/v1/admin/runners/{runner_id}")).await
    }

    /// Cordons a runner: no new boxes; its boxes keep running.
    pub async fn cordon_runner(&self, runner_id: impl Display) -> Result<RunnerView> {
        self.post_empty(&format!("/v1/admin/runners/{runner_id}/cordon")).await
    }

    /// Drains a runner (cordon, before maintenance).
    pub async fn drain_runner(&self, runner_id: impl Display) -> Result<RunnerView> {
        self.post_empty(&format!("/v1/admin/runners/{runner_id}/drain")).await
    }

    /// Puts a cordoned or drained runner back in service.
    pub async fn uncordon_runner(&self, runner_id: impl Display) -> Result<RunnerView> {
        self.post_empty(&format!("/v1/admin/runners/{runner_id}/uncordon")).await
    }

    /// Removes a runner without boxes from the fleet.
    pub async fn delete_runner(&self, runner_id: impl Display) -> Result<()> {
        self.none(Method::DELETE, &format!("/v1/admin/runners/{runner_id}")).await
    }

    /// Issues a runner join token; its secret is in the answer only.
    pub async fn create_join_token(&self, req: &CreateJoinToken) -> Result<JoinTokenCreated> {
        self.call(Method::POST, "/v1/admin/join-tokens", Some(req)).await
    }

    /// Every join token.
    pub async fn list_join_tokens(&self) -> Result<JoinTokenList> {
        self.get("/v1/admin/join-tokens").await
    }

    /// Revokes a join token.
    pub async fn revoke_join_token(&self, token_id: impl Display) -> Result<JoinTokenView> {
        self.call(Method::DELETE, &format!("/v1/admin/join-tokens/{token_id}"), None::<&()>).await
    }

    /// The audit log of admin actions, newest first (`limit`: 1..=1000, default 100).
    pub async fn audit_log(&self, limit: Option<i64>) -> Result<AuditList> {
        let q = limit.map(|l| format!("?limit={l}")).unwrap_or_default();
        self.get(&format!("/v1/admin/audit{q}")).await
    }

    // --- any endpoint ---------------------------------------------------------------------------------------------

    /// Any endpoint as JSON, for scripts (`boxyard admin call`): `method` is an HTTP method ("GET", "post", ...),
    /// `path` starts with `/v1/`. Returns the answer's JSON, or None for an answer without a body (204).
    pub async fn call_raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Option<Value>> {
        let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::InvalidInput(format!("{method:?} is not an HTTP method")))?;
        let payload = match body {
            Some(b) => Payload::Json(b.to_string().into_bytes()),
            None => Payload::None,
        };
        let resp = self.send(m, path, payload).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        self.read(path, resp).await.map(Some)
    }
}

/// `?cursor=...` (URL-encoded), or nothing.
fn cursor_query(cursor: Option<&str>) -> String {
    cursor
        .map(|c| format!("?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("cursor", c).finish()))
        .unwrap_or_default()
}

/// `path=...`, URL-encoded.
fn path_query(path: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new()).append_pair("path", path).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(cursor_query(None), "");
        assert_eq!(
            cursor_query(Some("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")),
            "?cursor=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(cursor_query(Some("a&b=c")), "?cursor=a%26b%3Dc");
        assert_eq!(path_query("/tmp/a b&c"), "path=%2Ftmp%2Fa+b%26c");
    }

    #[test]
    fn a_bad_url_is_refused_and_the_key_is_never_printed() {
        assert!(matches!(Client::new("not a url", "k"), Err(Error::Transport { .. })));
        let c = Client::new("http://127.0.0.1:8080/", "byk_secret").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
        assert!(!format!("{c:?}").contains("byk_secret"));
    }

    #[tokio::test]
    async fn call_raw_refuses_a_method_that_does_not_exist() {
        let c = Client::new("http://127.0.0.1:9", "k").unwrap();
        let e = c.call_raw("NOT A METHOD", "/v1/me", None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    }
}
