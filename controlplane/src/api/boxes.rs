//! `/v1/boxes`: create, list, get, start, stop, delete.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::{Body, Query, id};
use super::idempotency;
use super::model::*;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::lifecycle::boxes::{self, NewBox};
use crate::machine::BoxState;
use crate::state::AppState;
use crate::store::boxes::{self as store, NewBoxRow};

async fn validate(st: &AppState, org: uuid::Uuid, c: CreateBox) -> ApiResult<NewBox> {
    // Every value is within the schema's bounds (checked by the extractor); what is left are the defaults and the
    // snapshot.
    let cfg = &st.config;
    let secs = |v: Option<i64>| v.map(|v| v as i32);
    let snapshot_row = match &c.snapshot {
        Some(name) => Some(crate::snapshots::resolve(st, org, name).await?),
        None => None,
    };
    // The snapshot's environment, then the box's own on top.
    let mut env = snapshot_row.as_ref().map(|s| s.metadata.env.clone()).unwrap_or_default();
    env.extend(c.env.clone());
    Ok(NewBox {
        row: NewBoxRow {
            name: c.name,
            snapshot: c.snapshot,
            snapshot_id: snapshot_row.as_ref().map(|s| s.id),
            snapshot_digest: snapshot_row.as_ref().and_then(|s| s.digest.clone()),
            vcpus: c.vcpus.map_or(cfg.default_vcpus as i32, |v| v as i32),
            memory_mib: c.memory_mib.unwrap_or(cfg.default_memory_mib as i64),
            disk_mib: c.disk_mib.unwrap_or(cfg.default_disk_mib as i64),
            env,
            labels: c.labels,
            runner_selector: c.runner_selector,
            auto_stop_seconds: secs(c.auto_stop_seconds),
            ttl_seconds: secs(c.ttl_seconds),
        },
    })
}

/// Create a box.
///
/// Waits until the box runs (201) unless `wait=false` (202, `pending`). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/boxes", tag = "boxes", params(WaitParam, ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1 to 255 visible ASCII characters, e.g. a UUID (HTTP drops spaces around a header value)", pattern = "^[ \t]*[!-~]{1,255}[ \t]*$")),
    request_body = CreateBox,
    responses((status = 201, body = BoxView, description = "The box runs"), (status = 202, body = BoxView, description = "Accepted (wait=false)"),
        (status = 404, body = ErrorBody, description = "not_found: no such snapshot"),
        (status = 409, body = ErrorBody, description = "snapshot_not_ready: the snapshot is not active"),
        (status = 422, body = ErrorBody, description = "Invalid request or per-box quota"), (status = 429, body = ErrorBody, description = "quota_exceeded"),
        (status = 503, body = ErrorBody, description = "no_capacity / no_runner_matches (with retry_after)")))]
pub async fn create(
    State(st): State<AppState>,
    p: Principal,
    Query(w): Query<WaitParam>,
    headers: HeaderMap,
    body: Body<CreateBox>,
) -> Response {
    let wait = w.wait.unwrap_or(true);
    let op = format!("create_box wait={wait}");
    let st2 = st.clone();
    idempotency::run(&st, &headers, p.org_id, &op, &body.hash, async move {
        let nb = validate(&st2, p.org_id, body.value).await?;
        let row = boxes::create(&st2, p.org_id, nb).await?;
        if !wait {
            let st3 = st2.clone();
            let r = row.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::lifecycle::place::place(&st3, &r).await {
                    tracing::info!(box_id = %r.id, "placement failed: {e}");
                }
            });
            return Ok((StatusCode::ACCEPTED, BoxView::from(row)));
        }
        match crate::lifecycle::place::place(&st2, &row).await {
            Ok(b) => Ok((StatusCode::CREATED, BoxView::from(b))),
            // The create failed as a whole: the box does not stay behind.
            Err(e) => Err(boxes::discard_failed_create(&st2, row.id, e).await),
        }
    })
    .await
}

/// List boxes (newest last), paginated.
#[utoipa::path(get, path = "/v1/boxes", tag = "boxes", params(ListParams),
    responses((status = 200, body = BoxList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<ListParams>,
) -> ApiResult<axum::Json<BoxList>> {
    let limit = q.limit.unwrap_or(50);
    let state = match &q.state {
        Some(s) => Some(s.parse::<BoxState>().map_err(|e| ApiError::invalid(e.to_string()))?),
        None => None,
    };
    let after = super::page_start(&q.cursor)?;
    let label = match &q.label {
        Some(l) => {
            Some(l.split_once('=').ok_or_else(|| ApiError::bad_request("invalid_query", "label must be key=value"))?)
        }
        None => None,
    };
    let rows = store::list(&st.db, p.org_id, after, state, label, limit + 1).await?;
    let (items, next_cursor) =
        super::page(rows.into_iter().map(BoxView::from).collect::<Vec<BoxView>>(), limit, |x| x.id);
    Ok(axum::Json(BoxList { items, next_cursor }))
}

/// Get a box.
#[utoipa::path(get, path = "/v1/boxes/{id}", tag = "boxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = BoxView), (status = 404, body = ErrorBody)))]
pub async fn get(State(st): State<AppState>, p: Principal, Path(bid): Path<String>) -> ApiResult<axum::Json<BoxView>> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    Ok(axum::Json(b.into()))
}

/// Start a stopped box (on the runner that has its disk).
#[utoipa::path(post, path = "/v1/boxes/{id}/start", tag = "boxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = BoxView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn start(
    State(st): State<AppState>,
    p: Principal,
    Path(bid): Path<String>,
) -> ApiResult<axum::Json<BoxView>> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    Ok(axum::Json(boxes::start(&st, &b).await?.into()))
}

/// Stop a box (its disk is kept; start boots it again).
#[utoipa::path(post, path = "/v1/boxes/{id}/stop", tag = "boxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = BoxView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(State(st): State<AppState>, p: Principal, Path(bid): Path<String>) -> ApiResult<axum::Json<BoxView>> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    Ok(axum::Json(boxes::stop(&st, &b).await?.into()))
}

/// Delete a box and everything in it.
#[utoipa::path(delete, path = "/v1/boxes/{id}", tag = "boxes", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(State(st): State<AppState>, p: Principal, Path(bid): Path<String>) -> ApiResult<Response> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    boxes::delete(&st, &b).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
