//! The REST + WebSocket API gateway under `/v1` (axum), its OpenAPI 3 document (`/v1/openapi.json`, generated from
//! the handlers' annotations), `/metrics` and `/healthz`.
//!
//! - [`boxes`]: box lifecycle; [`executions`]: commands, signals, files; [`attach`]: the WebSocket bridge;
//! - [`keys`]: org keys, `/v1/me`, `/v1/config`; [`admin`]: platform administration;
//! - [`contract`]: the served document, completed with the rules of every operation, and the validators compiled
//!   from it; [`extract`]: extractors that check requests against it and whose rejections are JSON errors; [`idempotency`]: `Idempotency-Key`;
//! - [`request_id`]: the id of every request, in its logs, its response and its error body;
//! - [`model`]: the request and response bodies (those of the contract crate `boxyard-api`) and the conversions
//!   from rows to them.

pub mod admin;
pub mod attach;
pub mod boxes;
pub mod contract;
pub mod executions;
pub mod extract;
pub mod idempotency;
pub mod keys;
pub mod model;
pub mod request_id;
pub mod snapshots;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The `cursor` query parameter of a list: the id after which the page starts (a UUID, as the schema requires).
pub fn page_start(cursor: &Option<String>) -> ApiResult<Option<uuid::Uuid>> {
    cursor
        .as_deref()
        .map(|c| uuid::Uuid::parse_str(c).map_err(|_| ApiError::invalid("cursor is not one this API returned")))
        .transpose()
}

/// Cuts a page fetched with `limit + 1` rows to `limit`, and the cursor of the next page (None on the last).
pub fn page<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> uuid::Uuid) -> (Vec<T>, Option<String>) {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        let next = items.last().map(|x| id(x).to_string());
        (items, next)
    } else {
        (items, None)
    }
}

/// The OpenAPI 3 document of the `/v1` API, generated from the handlers' annotations (served at `/v1/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "Boxyard API", description = "Run untrusted code in microVM boxes. Authenticate with `Authorization: Bearer <api key>`."),
    paths(
        boxes::create, boxes::list, boxes::get, boxes::start, boxes::stop, boxes::delete,
        executions::create, executions::list, executions::get, executions::kill, executions::signal, executions::resize,
        executions::upload, executions::download, attach::attach,
        snapshots::create, snapshots::upload, snapshots::list, snapshots::get, snapshots::delete,
        keys::me, keys::config, keys::create, keys::list, keys::revoke,
        admin::create_org, admin::list_orgs, admin::get_org, admin::delete_org, admin::set_quota, admin::create_org_key, admin::list_org_keys,
        admin::revoke_org_key, admin::list_runners, admin::get_runner, admin::delete_runner, admin::cordon, admin::drain, admin::uncordon,
        admin::create_join_token, admin::list_join_tokens, admin::revoke_join_token, admin::audit_log,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "boxes", description = "Box lifecycle"),
        (name = "executions", description = "Commands in a box, their output and results"),
        (name = "files", description = "Copying files into and out of a box (tar streams)"),
        (name = "snapshots", description = "Root filesystem images that boxes boot from"),
        (name = "keys", description = "The org's API keys (org admins)"),
        (name = "meta", description = "The caller and the platform"),
        (name = "admin", description = "Platform administration (platform admins)"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The HTTP router of the API gateway: every `/v1` route, `/metrics` and `/healthz`, with request spans and status
/// counts.
pub fn router(st: AppState) -> Router {
    let v1 = Router::new()
        .route("/boxes", post(boxes::create).get(boxes::list))
        .route("/boxes/{id}", get(boxes::get).delete(boxes::delete))
        .route("/boxes/{id}/start", post(boxes::start))
        .route("/boxes/{id}/stop", post(boxes::stop))
        .route("/boxes/{id}/executions", post(executions::create).get(executions::list))
        .route("/boxes/{id}/executions/{eid}", get(executions::get))
        .route("/boxes/{id}/executions/{eid}/kill", post(executions::kill))
        .route("/boxes/{id}/executions/{eid}/signal", post(executions::signal))
        .route("/boxes/{id}/executions/{eid}/resize", post(executions::resize))
        .route("/boxes/{id}/executions/{eid}/attach", get(attach::attach))
        .route("/boxes/{id}/files", put(executions::upload).get(executions::download))
        .route("/snapshots", post(snapshots::create).get(snapshots::list))
        .route("/snapshots/{id}", get(snapshots::get).delete(snapshots::delete))
        .route("/snapshots/{id}/image", put(snapshots::upload).layer(axum::extract::DefaultBodyLimit::disable()))
        .route("/me", get(keys::me))
        .route("/config", get(keys::config))
        .route("/keys", post(keys::create).get(keys::list))
        .route("/keys/{key_id}", axum::routing::delete(keys::revoke))
        .route("/admin/orgs", post(admin::create_org).get(admin::list_orgs))
        .route("/admin/orgs/{org_id}", get(admin::get_org).delete(admin::delete_org))
        .route("/admin/orgs/{org_id}/quota", put(admin::set_quota))
        .route("/admin/orgs/{org_id}/keys", post(admin::create_org_key).get(admin::list_org_keys))
        .route("/admin/orgs/{org_id}/keys/{key_id}", axum::routing::delete(admin::revoke_org_key))
        .route("/admin/runners", get(admin::list_runners))
        .route("/admin/runners/{runner_id}", get(admin::get_runner).delete(admin::delete_runner))
        .route("/admin/runners/{runner_id}/cordon", post(admin::cordon))
        .route("/admin/runners/{runner_id}/drain", post(admin::drain))
        .route("/admin/runners/{runner_id}/uncordon", post(admin::uncordon))
        .route("/admin/join-tokens", post(admin::create_join_token).get(admin::list_join_tokens))
        .route("/admin/join-tokens/{token_id}", axum::routing::delete(admin::revoke_join_token))
        .route("/admin/audit", get(admin::audit_log))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(st.clone(), observe))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(st)
}

/// A span per request, child of the caller's trace when it sent `traceparent`.
fn request_span(req: &Request) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let id = req.headers().get(&request_id::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id);
    let _ = span.set_parent(crate::telemetry::extract_context(req.headers()));
    span
}

async fn openapi() -> impl IntoResponse {
    axum::Json(contract::contract().document().clone())
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        st.metrics.encode(),
    )
}

/// Counts responses by status.
async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    st.metrics
        .http_responses
        .get_or_create(&crate::metrics::StatusLabel { status: resp.status().as_u16().to_string() })
        .inc();
    resp
}
