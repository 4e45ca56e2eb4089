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

fn valid_org_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_quota(q: &Quota) -> ApiResult<()> {
    let vals = [
        q.max_boxes as i64,
        q.max_vcpus as i64,
        q.max_memory_mib,
        q.max_box_vcpus as i64,
        q.max_box_memory_mib,
        q.max_box_disk_mib,
    ];
    if vals.iter().any(|v| *v < 0) {
        return Err(ApiError::invalid("quota values must not be negative"));
    }
    Ok(())
}

async fn org_view(st: &AppState, org: Uuid) -> ApiResult<OrgView> {
    let (name, created_at): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT name, created_at FROM orgs WHERE id = $1")
            .bind(org)
            .fetch_optional(&st.db)
            .await?
            .ok_or_else(|| ApiError::not_found("org", org))?;
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
    if !valid_org_name(&c.name) {
        return Err(ApiError::invalid("org name must be [a-z0-9][a-z0-9-]*, at most 63 bytes"));
    }
    let q = c.quota.unwrap_or(st.config.default_quota);
    check_quota(&q)?;
    let mut tx = st.db.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE name = $1)")
        .bind(&c.name)
        .fetch_one(&mut *tx)
        .await?;
    if exists {
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
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orgs ORDER BY id").fetch_all(&st.db).await?;
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
    check_quota(&q)?;
    let mut tx = st.db.begin().await?;
    let n = sqlx::query(
        "UPDATE org_quotas SET max_boxes = $2, max_vcpus = $3, max_memory_mib = $4, max_box_vcpus = $5,
                max_box_memory_mib = $6, max_box_disk_mib = $7, updated_at = now() WHERE org_id = $1",
    )
    .bind(org)
    .bind(q.max_boxes)
    .bind(q.max_vcpus)
    .bind(q.max_memory_mib)
    .bind(q.max_box_vcpus)
    .bind(q.max_box_memory_mib)
    .bind(q.max_box_disk_mib)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
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

async fn org_exists(st: &AppState, org: Uuid) -> ApiResult<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1)").bind(org).fetch_one(&st.db).await?;
    if !exists {
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

#[derive(sqlx::FromRow)]
struct RunnerRow {
    id: Uuid,
    name: String,
    address: String,
    state: String,
    draining: bool,
    cordoned: bool,
    labels: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    capacity_vcpus: i32,
    capacity_memory_mib: i64,
    capacity_disk_mib: i64,
    allocated_vcpus: i64,
    allocated_memory_mib: i64,
    reported_boxes: i32,
    reported_running: i32,
    version: String,
    backend: String,
    registered_at: chrono::DateTime<chrono::Utc>,
    last_heartbeat_at: chrono::DateTime<chrono::Utc>,
}

const SELECT_RUNNER: &str = "SELECT r.id, r.name, r.address, r.state, r.draining, r.cordoned, r.labels, r.capacity_vcpus,
        r.capacity_memory_mib, r.capacity_disk_mib,
        (SELECT coalesce(sum(vcpus), 0)::bigint FROM boxes b WHERE b.runner_id = r.id AND b.reserved) AS allocated_vcpus,
        (SELECT coalesce(sum(memory_mib), 0)::bigint FROM boxes b WHERE b.runner_id = r.id AND b.reserved) AS allocated_memory_mib,
        r.reported_boxes, r.reported_running, r.version, r.backend, r.registered_at, r.last_heartbeat_at FROM runners r";

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
    let r: RunnerRow = sqlx::query_as(sql!("{SELECT_RUNNER} WHERE r.id = $1"))
        .bind(rid)
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::not_found("runner", rid))?;
    Ok(r.into())
}

/// List runners.
#[utoipa::path(get, path = "/v1/admin/runners", tag = "admin", responses((status = 200, body = RunnerList), (status = 403, body = ErrorBody)))]
pub async fn list_runners(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<RunnerList>> {
    p.require(Role::PlatformAdmin)?;
    let rows: Vec<RunnerRow> = sqlx::query_as(sql!("{SELECT_RUNNER} ORDER BY r.name")).fetch_all(&st.db).await?;
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
    let n = sqlx::query(
        "UPDATE runners SET draining = coalesce($2, draining), cordoned = coalesce($3, cordoned) WHERE id = $1",
    )
    .bind(rid)
    .bind(draining)
    .bind(cordoned)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
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
    let name: String = sqlx::query_scalar("SELECT name FROM runners WHERE id = $1 FOR UPDATE")
        .bind(rid)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("runner", rid))?;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM boxes WHERE runner_id = $1 AND deleted_at IS NULL AND state <> 'lost'",
    )
    .bind(rid)
    .fetch_one(&mut *tx)
    .await?;
    if active > 0 {
        return Err(ApiError::conflict(
            "runner_in_use",
            format!("runner {name} still has {active} boxes; drain it and wait for them to end, or delete them"),
        ));
    }
    sqlx::query("UPDATE boxes SET runner_id = NULL, reserved = false WHERE runner_id = $1")
        .bind(rid)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM runners WHERE id = $1").bind(rid).execute(&mut *tx).await?;
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), "runner.delete", &name, serde_json::json!({"runner_id": rid}))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    prefix: String,
    description: String,
    created_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    uses: i32,
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

const TOKEN_COLS: &str = "id, prefix, description, created_at, expires_at, revoked_at, uses";

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
    if !(60..=30 * 86_400).contains(&ttl) {
        return Err(ApiError::invalid("ttl_seconds must be between 60 and 2592000 (30 days)"));
    }
    if c.description.len() > 256 {
        return Err(ApiError::invalid("description must be at most 256 bytes"));
    }
    let s = auth::generate("byj");
    let mut tx = st.db.begin().await?;
    let row: TokenRow = sqlx::query_as(sql!(
        "INSERT INTO join_tokens (id, prefix, hash, description, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING {TOKEN_COLS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&s.prefix)
    .bind(&s.hash)
    .bind(&c.description)
    .bind(p.key_id)
    .bind(ttl as f64)
    .fetch_one(&mut *tx)
    .await?;
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
    let rows: Vec<TokenRow> =
        sqlx::query_as(sql!("SELECT {TOKEN_COLS} FROM join_tokens ORDER BY id")).fetch_all(&st.db).await?;
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
    let row: TokenRow = sqlx::query_as(sql!(
        "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING {TOKEN_COLS}"
    ))
    .bind(tid)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::not_found("join token", tid))?;
    audit(&st.db, Some(p.key_id), Some(p.org_id), "join_token.revoke", &row.prefix, serde_json::json!({})).await?;
    Ok(axum::Json(row.into()))
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: chrono::DateTime<chrono::Utc>,
    actor_key: Option<Uuid>,
    actor_org: Option<Uuid>,
    action: String,
    target: String,
    details: serde_json::Value,
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
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, at, actor_key, actor_org, action, target, details FROM audit_log ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&st.db)
    .await?;
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
