//! `/v1/boxes/{id}/executions` (run, list, get, kill, signal, resize) and `/v1/boxes/{id}/files` (tar upload and
//! download, streamed both ways).

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::extract::{Body, Query, id};
use super::idempotency;
use super::model::*;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::lifecycle::executions::{self, NewExec};
use crate::lifecycle::{boxes, streams};
use crate::machine::ExecutionState;
use crate::state::AppState;
use crate::store::boxes::BoxRow;
use crate::store::executions::{self as store, ExecRow};

fn validate(c: CreateExecution) -> ApiResult<NewExec> {
    // Every value is within the schema's bounds (checked by the extractor). An empty command means the snapshot's
    // default command (checked when the execution is created).
    let timeout_ms = c.timeout_ms.map(|t| t as u64);
    Ok(NewExec {
        command: c.command,
        env: c.env,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        tty: c.tty.map(|t| (t.rows, t.cols)),
        stdin: c.stdin,
        timeout_ms,
    })
}

/// Run a command in a box.
///
/// Returns at once (201) with the execution id; attach to stream its output, or poll it for the result.
/// Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/boxes/{id}/executions", tag = "executions",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters, e.g. a UUID (HTTP drops spaces around a header value)", pattern = "^[ \t]*[!-~]{1,255}[ \t]*$")),
    request_body = CreateExecution,
    responses((status = 201, body = ExecutionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "box_not_running"),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
    headers: HeaderMap,
    body: Body<CreateExecution>,
) -> Response {
    let bid = match id(&bid, "box") {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let op = format!("exec {bid}");
    let st2 = st.clone();
    idempotency::run(&st, &headers, p.org_id, &op, &body.hash, async move {
        let b = boxes::get(&st2, p.org_id, bid).await?;
        let ne = validate(body.value)?;
        let x = executions::create(&st2, &b, ne).await?;
        Ok((StatusCode::CREATED, ExecutionView::from(x)))
    })
    .await
}

/// List a box's executions (oldest first), paginated.
#[utoipa::path(get, path = "/v1/boxes/{id}/executions", tag = "executions", params(("id" = Uuid, Path), ExecListParams),
    responses((status = 200, body = ExecutionList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
    Query(q): Query<ExecListParams>,
) -> ApiResult<axum::Json<ExecutionList>> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    let state = match &q.state {
        Some(s) => Some(s.parse::<ExecutionState>().map_err(|e| ApiError::invalid(e.to_string()))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    let after = super::page_start(&q.cursor)?;
    let rows = store::list(&st.db, p.org_id, b.id, after, state, limit + 1).await?;
    let (items, next_cursor) =
        super::page(rows.into_iter().map(ExecutionView::from).collect::<Vec<ExecutionView>>(), limit, |x| x.id);
    Ok(axum::Json(ExecutionList { items, next_cursor }))
}

async fn load(st: &AppState, p: &Principal, bid: &str, eid: &str) -> ApiResult<(BoxRow, ExecRow)> {
    let b = boxes::get(st, p.org_id, id(bid, "box")?).await?;
    let x = executions::get(st, &b, id(eid, "execution")?).await?;
    Ok((b, x))
}

/// Get an execution (its result once finished).
#[utoipa::path(get, path = "/v1/boxes/{id}/executions/{eid}", tag = "executions",
    params(("id" = Uuid, Path), ("eid" = Uuid, Path)),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    p: Principal,
    Path((bid, eid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (b, x) = load(&st, &p, &bid, &eid).await?;
    let r = executions::refresh(&st, &b, x).await?;
    let mut resp = axum::Json(ExecutionView::from(r.exec)).into_response();
    if r.stale {
        resp.headers_mut().insert(STALE_HEADER, header::HeaderValue::from_static("runner-unreachable"));
    }
    Ok(resp)
}

/// Set on a read answered from the stored record because the box's runner did not answer within the deadline.
pub const STALE_HEADER: &str = "x-boxyard-stale";

/// Kill an execution (SIGKILL to its process group).
#[utoipa::path(post, path = "/v1/boxes/{id}/executions/{eid}/kill", tag = "executions",
    params(("id" = Uuid, Path), ("eid" = Uuid, Path)),
    responses((status = 200, body = ExecutionView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn kill(
    State(st): State<AppState>,
    p: Principal,
    Path((bid, eid)): Path<(String, String)>,
) -> ApiResult<axum::Json<ExecutionView>> {
    let (b, x) = load(&st, &p, &bid, &eid).await?;
    Ok(axum::Json(executions::kill(&st, &b, x).await?.into()))
}

/// Send a signal to an execution's process group.
#[utoipa::path(post, path = "/v1/boxes/{id}/executions/{eid}/signal", tag = "executions",
    params(("id" = Uuid, Path), ("eid" = Uuid, Path)), request_body = SignalBody,
    responses((status = 204, description = "Sent"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn signal(
    State(st): State<AppState>,
    p: Principal,
    Path((bid, eid)): Path<(String, String)>,
    body: Body<SignalBody>,
) -> ApiResult<StatusCode> {
    let (b, x) = load(&st, &p, &bid, &eid).await?;
    finished_conflict(&x)?;
    executions::signal(&st, &b, &x, body.value.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn finished_conflict(x: &ExecRow) -> ApiResult<()> {
    if x.state != ExecutionState::Running {
        return Err(ApiError::conflict("execution_finished", format!("execution {} has finished", x.id)));
    }
    Ok(())
}

/// Resize an execution's terminal.
#[utoipa::path(post, path = "/v1/boxes/{id}/executions/{eid}/resize", tag = "executions",
    params(("id" = Uuid, Path), ("eid" = Uuid, Path)), request_body = TtySize,
    responses((status = 204, description = "Resized"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn resize(
    State(st): State<AppState>,
    p: Principal,
    Path((bid, eid)): Path<(String, String)>,
    body: Body<TtySize>,
) -> ApiResult<StatusCode> {
    let (b, x) = load(&st, &p, &bid, &eid).await?;
    finished_conflict(&x)?;
    let t = body.value;
    executions::resize(&st, &b, &x, t.rows, t.cols).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Upload files: the body is a tar stream, unpacked into the directory `path` (created if missing).
#[utoipa::path(put, path = "/v1/boxes/{id}/files", tag = "files", params(("id" = Uuid, Path), FilesParams),
    request_body(description = "A tar stream (any content type is taken as one)", content((boxyard_api::schema::Binary = "application/x-tar"), (boxyard_api::schema::Binary = "application/octet-stream"))),
    responses((status = 200, body = UploadResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    State(st): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
    Query(q): Query<FilesParams>,
    body: HttpBody,
) -> ApiResult<axum::Json<UploadResult>> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    // A broken upload ends the stream early: the runner sees a truncated archive and fails the upload.
    let chunks = body
        .into_data_stream()
        .take_while(|r| {
            if let Err(e) = r {
                tracing::info!("upload body failed: {e}");
            }
            futures::future::ready(r.is_ok())
        })
        .filter_map(|r| futures::future::ready(r.ok()))
        .map(|data| data.to_vec());
    let (bytes, entries) = streams::upload(&st, &b, q.path.clone(), Box::pin(chunks)).await?;
    Ok(axum::Json(UploadResult { bytes, entries }))
}

/// Download files: a tar stream of the file or directory at `path`.
#[utoipa::path(get, path = "/v1/boxes/{id}/files", tag = "files", params(("id" = Uuid, Path), FilesParams),
    responses((status = 200, content_type = "application/x-tar", body = boxyard_api::schema::Binary), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn download(
    State(st): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
    Query(q): Query<FilesParams>,
) -> ApiResult<Response> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    let (first, stream) = streams::download(&st, &b, q.path).await?;
    let head = futures::stream::iter(first.map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c.data))));
    let rest = stream.map(|r| {
        r.map(|c| axum::body::Bytes::from(c.data)).map_err(|s| std::io::Error::other(s.message().to_string()))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], HttpBody::from_stream(head.chain(rest))).into_response())
}
