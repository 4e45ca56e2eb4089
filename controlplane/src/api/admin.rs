//! `/v1/admin`: platform administration — orgs and their quotas and keys, runners (list, cordon, drain), runner
//! join tokens, and the audit log. Platform admin keys only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use uuid::Uuid;

use super::extract::{Body, Query, id};
use super::keys::{create_key, list_keys, quota_of, revoke_key};
use super::model::*;
use crate::auth::{self, Principal, Role};
use crate::config::Quota;
use crate::db::audit;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::store::audit::AuditRow;
use crate::store::join_tokens::{self, TokenRow};
use crate::store::runners::{self, RunnerRow};
use crate::store::{boxes as box_store, orgs};

async fn org_view(st: &AppState, org: Uuid) -> ApiResult<OrgView> {
    let (name, created_at) = orgs::get(&st.db, org).await?.ok_or_else(|| ApiError::not_found("org", org))?;
    Ok(OrgView { id: org, name, created_at, quota: quota_of(st, org).await? })
}

/// Create an org.
#[utoipa::path(post, path = "/v1/admin/orgs", tag = "admin", request_body = CreateOrg,
    responses((status = 201, body = OrgView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_org(
    State(st): State<AppState>,
    p: Principal,
    body: Body<CreateOrg>,
) -> ApiResult<(StatusCode, axum::Json<OrgView>)> {
    p.require(Role::PlatformAdmin)?;
    let c = body.value;
    let q = c.quota.unwrap_or(st.config.default_quota);
    let mut tx = st.db.begin().await?;
    if orgs::name_taken(&mut tx, &c.name).await? {
        return Err(ApiError::conflict("already_exists", format!("an org named {:?} exists", c.name)));
    }
    let org = crate::db::create_org(&mut tx, &c.name, &q).await?;
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), "org.create", &c.name, serde_json::json!({"org_id": org})).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(org_view(&st, org).await?)))
}

/// List orgs.
#[utoipa::path(get, path = "/v1/admin/orgs", tag = "admin", responses((status = 200, body = OrgList), (status = 403, body = ErrorBody)))]
pub async fn list_orgs(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<OrgList>> {
    p.require(Role::PlatformAdmin)?;
    let ids = orgs::list(&st.db).await?;
    let mut items = Vec::with_capacity(ids.len());
    for org in ids {
        items.push(org_view(&st, org).await?);
    }
    Ok(axum::Json(OrgList { items }))
}

/// Get an org.
#[utoipa::path(get, path = "/v1/admin/orgs/{org_id}", tag = "admin", params(("org_id" = Uuid, Path)),
    responses((status = 200, body = OrgView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_org(
    State(st): State<AppState>,
    p: Principal,
    Path(org): Path<String>,
) -> ApiResult<axum::Json<OrgView>> {
    p.require(Role::PlatformAdmin)?;
    Ok(axum::Json(org_view(&st, id(&org, "org")?).await?))
}

/// Set an org's quota (takes effect for new boxes; running boxes are not stopped).
#[utoipa::path(put, path = "/v1/admin/orgs/{org_id}/quota", tag = "admin", params(("org_id" = Uuid, Path)), request_body = Quota,
    responses((status = 200, body = OrgView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_quota(
    State(st): State<AppState>,
    p: Principal,
    Path(org): Path<String>,
    body: Body<Quota>,
) -> ApiResult<axum::Json<OrgView>> {
    p.require(Role::PlatformAdmin)?;
    let org = id(&org, "org")?;
    let q = body.value;
    let mut tx = st.db.begin().await?;
    if !orgs::set_quota(&mut tx, org, &q).await? {
        return Err(ApiError::not_found("org", org));
    }
    audit(
        &mut *tx,
        Some(p.key_id),
        Some(p.org_id),
        "quota.set",
        &org.to_string(),
        serde_json::to_value(q).unwrap_or_default(),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(org_view(&st, org).await?))
}

/// Delete an org: refused while it has boxes that are not deleted, or snapshots. Its keys are revoked and deleted
/// with it; the audit log keeps the record.
#[utoipa::path(delete, path = "/v1/admin/orgs/{org_id}", tag = "admin", params(("org_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "org_in_use (boxes or snapshots left), invalid_state (the caller's own org)")))]
pub async fn delete_org(State(st): State<AppState>, p: Principal, Path(org): Path<String>) -> ApiResult<StatusCode> {
    p.require(Role::PlatformAdmin)?;
    let org = id(&org, "org")?;
    if org == p.org_id {
        return Err(ApiError::conflict(
            "invalid_state",
            "an org cannot be deleted with its own key (the platform org is never deleted)",
        ));
    }
    let mut tx = st.db.begin().await?;
    let (name, used) = orgs::lock_for_delete(&mut tx, org).await?.ok_or_else(|| ApiError::not_found("org", org))?;
    if used.boxes > 0 || used.snapshots > 0 {
        return Err(ApiError::conflict(
            "org_in_use",
            format!(
                "org {name} still has {} and {}; delete them first (boxes: DELETE /v1/boxes/{{id}} with one of \
                 its keys; snapshots: DELETE /v1/snapshots/{{id}})",
                counted(used.boxes, "box", "boxes"),
                counted(used.snapshots, "snapshot", "snapshots")
            ),
        ));
    }
    let revoked = orgs::delete(&mut tx, org).await?;
    audit(
        &mut *tx,
        Some(p.key_id),
        Some(p.org_id),
        "org.delete",
        &name,
        serde_json::json!({"org_id": org, "keys_revoked": revoked}),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// "1 box", "2 boxes".
fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

async fn org_exists(st: &AppState, org: Uuid) -> ApiResult<()> {
    if !orgs::exists(&st.db, org).await? {
        return Err(ApiError::not_found("org", org));
    }
    Ok(())
}

/// Create a key in an org (e.g. its first admin key).
#[utoipa::path(post, path = "/v1/admin/orgs/{org_id}/keys", tag = "admin", params(("org_id" = Uuid, Path)), request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_org_key(
    State(st): State<AppState>,
    p: Principal,
    Path(org): Path<String>,
    body: Body<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<KeyCreated>)> {
    p.require(Role::PlatformAdmin)?;
    let org = id(&org, "org")?;
    org_exists(&st, org).await?;
    Ok((StatusCode::CREATED, axum::Json(create_key(&st, &p, org, body.value).await?)))
}

/// List an org's keys.
#[utoipa::path(get, path = "/v1/admin/orgs/{org_id}/keys", tag = "admin", params(("org_id" = Uuid, Path)),
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_org_keys(
    State(st): State<AppState>,
    p: Principal,
    Path(org): Path<String>,
) -> ApiResult<axum::Json<KeyList>> {
    p.require(Role::PlatformAdmin)?;
    let org = id(&org, "org")?;
    org_exists(&st, org).await?;
    Ok(axum::Json(list_keys(&st, org).await?))
}

/// Revoke a key of an org.
#[utoipa::path(delete, path = "/v1/admin/orgs/{org_id}/keys/{key_id}", tag = "admin", params(("org_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_org_key(
    State(st): State<AppState>,
    p: Principal,
    Path((org, kid)): Path<(String, String)>,
) -> ApiResult<axum::Json<KeyView>> {
    p.require(Role::PlatformAdmin)?;
    Ok(axum::Json(revoke_key(&st, &p, id(&org, "org")?, id(&kid, "key")?).await?))
}

impl From<RunnerRow> for RunnerView {
    fn from(r: RunnerRow) -> Self {
        RunnerView {
            id: r.id,
            name: r.name,
            address: r.address,
            state: r.state,
            draining: r.draining,
            cordoned: r.cordoned,
            labels: r.labels.0,
            capacity_vcpus: r.capacity_vcpus,
            capacity_memory_mib: r.capacity_memory_mib,
            capacity_disk_mib: r.capacity_disk_mib,
            allocated_vcpus: r.allocated_vcpus,
            allocated_memory_mib: r.allocated_memory_mib,
            boxes: r.reported_boxes,
            running_boxes: r.reported_running,
            version: r.version,
            backend: r.backend,
            registered_at: r.registered_at,
            last_heartbeat_at: r.last_heartbeat_at,
        }
    }
}

async fn runner_view(st: &AppState, rid: Uuid) -> ApiResult<RunnerView> {
    let r = runners::get(&st.db, rid).await?.ok_or_else(|| ApiError::not_found("runner", rid))?;
    Ok(r.into())
}

/// List runners.
#[utoipa::path(get, path = "/v1/admin/runners", tag = "admin", responses((status = 200, body = RunnerList), (status = 403, body = ErrorBody)))]
pub async fn list_runners(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<RunnerList>> {
    p.require(Role::PlatformAdmin)?;
    let rows = runners::list(&st.db).await?;
    Ok(axum::Json(RunnerList { items: rows.into_iter().map(RunnerView::from).collect() }))
}

/// Get a runner.
#[utoipa::path(get, path = "/v1/admin/runners/{runner_id}", tag = "admin", params(("runner_id" = Uuid, Path)),
    responses((status = 200, body = RunnerView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_runner(
    State(st): State<AppState>,
    p: Principal,
    Path(rid): Path<String>,
) -> ApiResult<axum::Json<RunnerView>> {
    p.require(Role::PlatformAdmin)?;
    Ok(axum::Json(runner_view(&st, id(&rid, "runner")?).await?))
}

/// Sets the flags given (None: unchanged).
async fn set_flags(
    st: &AppState,
    p: &Principal,
    rid: &str,
    action: &str,
    draining: Option<bool>,
    cordoned: Option<bool>,
) -> ApiResult<RunnerView> {
    p.require(Role::PlatformAdmin)?;
    let rid = id(rid, "runner")?;
    let mut tx = st.db.begin().await?;
    if !runners::set_flags(&mut tx, rid, draining, cordoned).await? {
        return Err(ApiError::not_found("runner", rid));
    }
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), action, &rid.to_string(), serde_json::json!({})).await?;
    tx.commit().await?;
    runner_view(st, rid).await
}

/// Cordon a runner: no new boxes are placed on it; its boxes keep running.
#[utoipa::path(post, path = "/v1/admin/runners/{runner_id}/cordon", tag = "admin", params(("runner_id" = Uuid, Path)),
    responses((status = 200, body = RunnerView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cordon(
    State(st): State<AppState>,
    p: Principal,
    Path(rid): Path<String>,
) -> ApiResult<axum::Json<RunnerView>> {
    Ok(axum::Json(set_flags(&st, &p, &rid, "runner.cordon", None, Some(true)).await?))
}

/// Drain a runner before maintenance: it takes no new boxes and is shown (and told, in heartbeat answers) as
/// draining. Its boxes keep running: wait until its `running_boxes` count reaches 0 (users stop or delete them, or
/// auto-stop and TTL end them), then upgrade or remove it.
#[utoipa::path(post, path = "/v1/admin/runners/{runner_id}/drain", tag = "admin", params(("runner_id" = Uuid, Path)),
    responses((status = 200, body = RunnerView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn drain(
    State(st): State<AppState>,
    p: Principal,
    Path(rid): Path<String>,
) -> ApiResult<axum::Json<RunnerView>> {
    Ok(axum::Json(set_flags(&st, &p, &rid, "runner.drain", Some(true), Some(true)).await?))
}

/// Put a cordoned or drained runner back in service.
#[utoipa::path(post, path = "/v1/admin/runners/{runner_id}/uncordon", tag = "admin", params(("runner_id" = Uuid, Path)),
    responses((status = 200, body = RunnerView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn uncordon(
    State(st): State<AppState>,
    p: Principal,
    Path(rid): Path<String>,
) -> ApiResult<axum::Json<RunnerView>> {
    Ok(axum::Json(set_flags(&st, &p, &rid, "runner.uncordon", Some(false), Some(false)).await?))
}

/// Remove a runner from the fleet. Refused while boxes are placed on it (unless they are lost); its lost and
/// deleted boxes are released. A removed runner that heartbeats again is told to register anew.
#[utoipa::path(delete, path = "/v1/admin/runners/{runner_id}", tag = "admin", params(("runner_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_runner(State(st): State<AppState>, p: Principal, Path(rid): Path<String>) -> ApiResult<StatusCode> {
    p.require(Role::PlatformAdmin)?;
    let rid = id(&rid, "runner")?;
    let mut tx = st.db.begin().await?;
    let name = runners::lock(&mut tx, rid).await?.ok_or_else(|| ApiError::not_found("runner", rid))?;
    let active = box_store::count_unlost_on(&mut tx, rid).await?;
    if active > 0 {
        return Err(ApiError::conflict(
            "runner_in_use",
            format!("runner {name} still has {active} boxes; drain it and wait for them to end, or delete them"),
        ));
    }
    box_store::detach_runner(&mut tx, rid).await?;
    runners::delete(&mut tx, rid).await?;
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), "runner.delete", &name, serde_json::json!({"runner_id": rid}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<TokenRow> for JoinTokenView {
    fn from(t: TokenRow) -> Self {
        JoinTokenView {
            id: t.id,
            prefix: t.prefix,
            description: t.description,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            uses: t.uses,
        }
    }
}

/// Issue a runner join token (`boxyard-runner serve --join-token`).
#[utoipa::path(post, path = "/v1/admin/join-tokens", tag = "admin", request_body = CreateJoinToken,
    responses((status = 201, body = JoinTokenCreated), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_join_token(
    State(st): State<AppState>,
    p: Principal,
    body: Body<CreateJoinToken>,
) -> ApiResult<(StatusCode, axum::Json<JoinTokenCreated>)> {
    p.require(Role::PlatformAdmin)?;
    let c = body.value;
    let ttl = c.ttl_seconds.unwrap_or(86_400);
    let s = auth::generate("byj");
    let mut tx = st.db.begin().await?;
    let row = join_tokens::insert(&mut tx, &s.prefix, &s.hash, &c.description, p.key_id, ttl as f64).await?;
    audit(
        &mut *tx,
        Some(p.key_id),
        Some(p.org_id),
        "join_token.create",
        &s.prefix,
        serde_json::json!({"ttl_seconds": ttl}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, axum::Json(JoinTokenCreated { token: row.into(), secret: s.value })))
}

/// List join tokens.
#[utoipa::path(get, path = "/v1/admin/join-tokens", tag = "admin", responses((status = 200, body = JoinTokenList), (status = 403, body = ErrorBody)))]
pub async fn list_join_tokens(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<JoinTokenList>> {
    p.require(Role::PlatformAdmin)?;
    let rows = join_tokens::list(&st.db).await?;
    Ok(axum::Json(JoinTokenList { items: rows.into_iter().map(JoinTokenView::from).collect() }))
}

/// Revoke a join token (registered runners keep working).
#[utoipa::path(delete, path = "/v1/admin/join-tokens/{token_id}", tag = "admin", params(("token_id" = Uuid, Path)),
    responses((status = 200, body = JoinTokenView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_join_token(
    State(st): State<AppState>,
    p: Principal,
    Path(tid): Path<String>,
) -> ApiResult<axum::Json<JoinTokenView>> {
    p.require(Role::PlatformAdmin)?;
    let tid = id(&tid, "join token")?;
    let row = join_tokens::revoke(&st.db, tid).await?.ok_or_else(|| ApiError::not_found("join token", tid))?;
    audit(&st.db, Some(p.key_id), Some(p.org_id), "join_token.revoke", &row.prefix, serde_json::json!({})).await?;
    Ok(axum::Json(row.into()))
}

/// The audit log of admin actions, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditParams),
    responses((status = 200, body = AuditList), (status = 403, body = ErrorBody)))]
pub async fn audit_log(
    State(st): State<AppState>,
    p: Principal,
    Query(q): Query<AuditParams>,
) -> ApiResult<axum::Json<AuditList>> {
    p.require(Role::PlatformAdmin)?;
    let limit = q.limit.unwrap_or(100);
    let rows: Vec<AuditRow> = crate::store::audit::newest(&st.db, limit).await?;
    let items = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: r.at,
            actor_key: r.actor_key,
            actor_org: r.actor_org,
            action: r.action,
            target: r.target,
            details: r.details,
        })
        .collect();
    Ok(axum::Json(AuditList { items }))
}
