//! Org API keys (`/v1/keys`, org admins) and the caller's identity (`/v1/me`, `/v1/config`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use uuid::Uuid;

use super::extract::{Body, id};
use super::model::*;
use crate::auth::{self, Principal, Role};
use crate::config::Quota;
use crate::db::audit;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::store::keys::{self as store, KeyRow, NewKey};
use crate::store::orgs;

impl From<KeyRow> for KeyView {
    fn from(k: KeyRow) -> Self {
        KeyView {
            id: k.id,
            org_id: k.org_id,
            name: k.name,
            prefix: k.prefix,
            role: Role::parse(&k.role).unwrap_or(Role::Member),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// Creates a key in `org` (used by org admins for their org and by platform admins for any org).
pub async fn create_key(st: &AppState, p: &Principal, org: Uuid, c: CreateKey) -> ApiResult<KeyCreated> {
    let role = c.role.unwrap_or(Role::Member);
    if role > p.role {
        return Err(ApiError::forbidden(format!("a {} key cannot create a {} key", p.role.as_str(), role.as_str())));
    }
    if role == Role::PlatformAdmin && org != p.org_id {
        return Err(ApiError::forbidden("platform_admin keys can only be created in the platform org"));
    }
    let s = auth::generate("byk");
    let mut tx = st.db.begin().await?;
    let kid = store::insert(
        &mut tx,
        &NewKey { org, name: &c.name, prefix: &s.prefix, hash: &s.hash, role: role.as_str(), created_by: p.key_id },
    )
    .await?;
    audit(
        &mut *tx,
        Some(p.key_id),
        Some(p.org_id),
        "key.create",
        &s.prefix,
        serde_json::json!({"org_id": org, "role": role.as_str()}),
    )
    .await?;
    tx.commit().await?;
    let row = store::get(&st.db, kid).await?.ok_or_else(|| ApiError::internal("a key vanished as it was created"))?;
    Ok(KeyCreated { key: row.into(), secret: s.value })
}

/// The keys of `org` (prefixes and roles, never secrets), for the org's admins and for platform admins.
pub async fn list_keys(st: &AppState, org: Uuid) -> ApiResult<KeyList> {
    let rows = store::list(&st.db, org).await?;
    Ok(KeyList { items: rows.into_iter().map(KeyView::from).collect() })
}

/// Revokes key `kid` of `org` at once and audits it; a caller cannot revoke a key with a higher role than its own.
pub async fn revoke_key(st: &AppState, p: &Principal, org: Uuid, kid: Uuid) -> ApiResult<KeyView> {
    let mut tx = st.db.begin().await?;
    let row: Option<KeyRow> = store::revoke(&mut tx, org, kid).await?;
    let row = row.ok_or_else(|| ApiError::not_found("key", kid))?;
    if Role::parse(&row.role).is_some_and(|r| r > p.role) {
        return Err(ApiError::forbidden("a key cannot revoke a key with a higher role"));
    }
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), "key.revoke", &row.prefix, serde_json::json!({"org_id": org}))
        .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Create an API key in the caller's org (org admins).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    p: Principal,
    body: Body<CreateKey>,
) -> ApiResult<(StatusCode, axum::Json<KeyCreated>)> {
    p.require(Role::Admin)?;
    Ok((StatusCode::CREATED, axum::Json(create_key(&st, &p, p.org_id, body.value).await?)))
}

/// List the org's API keys (prefixes only).
#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
pub async fn list(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<KeyList>> {
    p.require(Role::Admin)?;
    Ok(axum::Json(list_keys(&st, p.org_id).await?))
}

/// Revoke an API key of the org (effective at once).
#[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = Uuid, Path)),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(st): State<AppState>,
    p: Principal,
    Path(kid): Path<String>,
) -> ApiResult<axum::Json<KeyView>> {
    p.require(Role::Admin)?;
    let kid = id(&kid, "key")?;
    Ok(axum::Json(revoke_key(&st, &p, p.org_id, kid).await?))
}

/// The quota of `org`; 404 if the org does not exist.
pub async fn quota_of(st: &AppState, org: Uuid) -> ApiResult<Quota> {
    orgs::quota(&st.db, org).await?.ok_or_else(|| ApiError::not_found("org", org))
}

/// Who am I: the key's org and role.
#[utoipa::path(get, path = "/v1/me", tag = "meta", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<Me>> {
    let (org_name, _) = orgs::get(&st.db, p.org_id).await?.ok_or_else(|| ApiError::not_found("org", p.org_id))?;
    Ok(axum::Json(Me { key_id: p.key_id, org_id: p.org_id, org_name, role: p.role }))
}

/// Platform defaults and the caller's quota.
#[utoipa::path(get, path = "/v1/config", tag = "meta", responses((status = 200, body = PlatformConfig), (status = 401, body = ErrorBody)))]
pub async fn config(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<PlatformConfig>> {
    Ok(axum::Json(PlatformConfig {
        version: env!("CARGO_PKG_VERSION").to_string(),
        default_vcpus: st.config.default_vcpus,
        default_memory_mib: st.config.default_memory_mib,
        default_disk_mib: st.config.default_disk_mib,
        quota: quota_of(&st, p.org_id).await?,
    }))
}
