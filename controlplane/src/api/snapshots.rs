//! `/v1/snapshots`: register, upload an image (streamed to S3), list, get, delete.

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;
pub use boxyard_api::{CreateSnapshot, ExistingObject, SnapshotList, SnapshotView};
use futures::StreamExt;
use uuid::Uuid;

use super::extract::{Body, id};
use crate::auth::{Principal, Role};
use crate::db::audit;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::snapshots::{self, SnapshotRow};
use crate::state::AppState;

impl From<SnapshotRow> for SnapshotView {
    fn from(s: SnapshotRow) -> Self {
        SnapshotView {
            id: s.id,
            name: s.name,
            org_id: s.org_id,
            state: s.state,
            reason: s.reason,
            digest: s.digest,
            size_bytes: s.size_bytes,
            metadata: s.metadata.0,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Only the owning org's admins (and platform admins, for published snapshots) change a snapshot.
fn may_change(p: &Principal, s: &SnapshotRow) -> ApiResult<()> {
    match s.org_id {
        Some(org) if org == p.org_id => p.require(Role::Admin),
        None => p.require(Role::PlatformAdmin),
        Some(_) => Err(ApiError::not_found("snapshot", s.id)),
    }
}

/// Register a snapshot.
///
/// Then upload its image with `PUT /v1/snapshots/{id}/image`, or give `source` to register an object already in the
/// bucket (checked in the background: `verifying` → `active` or `failed`).
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 501, body = ErrorBody, description = "snapshots_disabled")))]
pub async fn create(
    State(st): State<AppState>,
    p: Principal,
    body: Body<CreateSnapshot>,
) -> ApiResult<(StatusCode, axum::Json<SnapshotView>)> {
    p.require(Role::Admin)?;
    let store = snapshots::store(&st)?.clone();
    // Every value is within the schema's bounds (checked by the extractor).
    let c = body.value;
    if c.public {
        p.require(Role::PlatformAdmin)?;
    }
    let id = Uuid::now_v7();
    let (state, key) = match &c.source {
        Some(src) => {
            // Uploaded images live under snapshots/ and go with their snapshot: not registrable a second time.
            if src.key.starts_with("snapshots/") {
                return Err(ApiError::forbidden(
                    "source.key must not be under snapshots/ (reserved for uploaded images); register an object \
                     stored elsewhere in the bucket",
                ));
            }
            ("verifying", src.key.clone())
        }
        None => ("uploading", format!("snapshots/{id}.ext4")),
    };
    let org = if c.public { None } else { Some(p.org_id) };
    let mut tx = st.db.begin().await?;
    snapshots::insert(
        &mut tx,
        &snapshots::NewSnapshot {
            id,
            org,
            name: &c.name,
            state,
            object_key: &key,
            metadata: &c.metadata,
            created_by: p.key_id,
        },
    )
    .await
    .map_err(|e| match ApiError::from(e) {
        e if e.code() == "already_exists" => {
            ApiError::conflict("already_exists", format!("a snapshot named {:?} exists", c.name))
        }
        e => e,
    })?;
    audit(
        &mut *tx,
        Some(p.key_id),
        Some(p.org_id),
        "snapshot.create",
        &c.name,
        serde_json::json!({"id": id, "public": c.public}),
    )
    .await?;
    tx.commit().await?;
    if let Some(src) = c.source {
        let db = st.db.clone();
        tokio::spawn(async move {
            let outcome = match store.digest(&src.key).await {
                Ok((size, d)) if d == src.digest => Ok((size, d)),
                Ok((_, d)) => Err(format!("digest mismatch: the object {} has {d}, expected {}", src.key, src.digest)),
                Err(e) => Err(format!("cannot read the object: {e}")),
            };
            if let Err(e) = snapshots::settle(&db, id, outcome).await {
                tracing::warn!(snapshot = %id, "cannot record the check of a registered image: {e}");
            }
        });
    }
    let row = snapshots::load(&st.db, id).await?.ok_or_else(|| ApiError::internal("the snapshot vanished"))?;
    Ok((StatusCode::CREATED, axum::Json(row.into())))
}

/// Upload a snapshot's image (the request body, streamed to the bucket; `application/octet-stream`).
///
/// The digest is computed on the way. An interrupted upload leaves the snapshot `failed` and nothing in the bucket
/// under its key; upload again to retry.
#[utoipa::path(put, path = "/v1/snapshots/{id}/image", tag = "snapshots", params(("id" = Uuid, Path)),
    request_body(content = boxyard_api::schema::Binary, content_type = "application/octet-stream"),
    responses((status = 200, body = SnapshotView), (status = 403, body = ErrorBody, description = "forbidden: not an admin of the snapshot's org"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "upload_failed: the body broke off or was empty"),
        (status = 501, body = ErrorBody, description = "snapshots_disabled"), (status = 502, body = ErrorBody, description = "storage_error")))]
pub async fn upload(
    State(st): State<AppState>,
    p: Principal,
    Path(sid): Path<String>,
    body: HttpBody,
) -> ApiResult<axum::Json<SnapshotView>> {
    let s = snapshots::get(&st, p.org_id, id(&sid, "snapshot")?).await?;
    may_change(&p, &s)?;
    let store = snapshots::store(&st)?.clone();
    let claimed = snapshots::claim_upload(&st.db, s.id).await?;
    if !claimed {
        return Err(ApiError::conflict(
            "invalid_state",
            format!(
                "snapshot {:?} is {} (or an upload is in progress); only a new or failed snapshot takes an image",
                s.name, s.state
            ),
        ));
    }
    // In a task of its own: a client that goes away ends the body stream with an error, and the snapshot is marked
    // failed (rather than the handler being dropped half way).
    let (db, key, sid) = (st.db.clone(), s.object_key.clone(), s.id);
    let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
    let task = tokio::spawn(async move {
        let r = store.upload(&key, stream).await;
        let outcome = match &r {
            Ok(u) if u.size == 0 => Err("the image is empty".to_string()),
            Ok(u) => Ok((u.size, u.digest.clone())),
            Err(boxyard_snapshot::s3::S3Error::Body(e)) => Err(format!("the upload was interrupted: {e}")),
            Err(e) => Err(format!("the bucket refused the image: {e}")),
        };
        if matches!(&r, Ok(u) if u.size == 0) {
            let _ = store.delete(&key).await;
        }
        let _ = snapshots::settle(&db, sid, outcome.clone()).await;
        outcome
    });
    match task.await {
        Ok(Ok(_)) => {}
        Ok(Err(reason)) if reason.starts_with("the bucket") => {
            return Err(ApiError::new(StatusCode::BAD_GATEWAY, "storage_error", reason));
        }
        Ok(Err(reason)) => return Err(ApiError::invalid(reason).with_code("upload_failed")),
        Err(e) => return Err(ApiError::internal(format!("the upload task failed: {e}"))),
    }
    let row = snapshots::load(&st.db, s.id).await?.ok_or_else(|| ApiError::not_found("snapshot", s.id))?;
    audit(
        &st.db,
        Some(p.key_id),
        Some(p.org_id),
        "snapshot.upload",
        &row.name,
        serde_json::json!({"digest": row.digest}),
    )
    .await?;
    Ok(axum::Json(row.into()))
}

/// List the snapshots the caller's org can use (its own and published ones).
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", responses((status = 200, body = SnapshotList)))]
pub async fn list(State(st): State<AppState>, p: Principal) -> ApiResult<axum::Json<SnapshotList>> {
    let rows = snapshots::visible_to(&st.db, p.org_id).await?;
    Ok(axum::Json(SnapshotList { items: rows.into_iter().map(SnapshotView::from).collect() }))
}

/// Get a snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots", params(("id" = Uuid, Path)),
    responses((status = 200, body = SnapshotView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    p: Principal,
    Path(sid): Path<String>,
) -> ApiResult<axum::Json<SnapshotView>> {
    Ok(axum::Json(snapshots::get(&st, p.org_id, id(&sid, "snapshot")?).await?.into()))
}

/// Delete a snapshot (refused while boxes use it).
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, body = ErrorBody, description = "forbidden: not an admin of the snapshot's org"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "snapshot_in_use")))]
pub async fn delete(State(st): State<AppState>, p: Principal, Path(sid): Path<String>) -> ApiResult<StatusCode> {
    let s = snapshots::get(&st, p.org_id, id(&sid, "snapshot")?).await?;
    may_change(&p, &s)?;
    let mut tx = st.db.begin().await?;
    let busy = snapshots::lock_busy(&mut tx, s.id).await?;
    if busy {
        return Err(ApiError::conflict(
            "invalid_state",
            format!("snapshot {:?} has an upload or a check in progress; delete it once that ends", s.name),
        )
        .retry_after(5));
    }
    let in_use = crate::store::boxes::count_using_snapshot(&mut tx, s.id).await?;
    if in_use > 0 {
        return Err(ApiError::conflict(
            "snapshot_in_use",
            format!("snapshot {:?} is used by {in_use} boxes; delete them first", s.name),
        ));
    }
    crate::store::boxes::unlink_snapshot(&mut tx, s.id).await?;
    snapshots::delete(&mut tx, s.id).await?;
    audit(&mut *tx, Some(p.key_id), Some(p.org_id), "snapshot.delete", &s.name, serde_json::json!({"id": s.id}))
        .await?;
    tx.commit().await?;
    // The object goes too, unless it was registered from elsewhere in the bucket.
    if s.object_key == format!("snapshots/{}.ext4", s.id)
        && let Ok(store) = snapshots::store(&st)
        && let Err(e) = store.delete(&s.object_key).await
    {
        tracing::warn!(snapshot = %s.id, "the image object stays in the bucket: {e}");
    }
    Ok(StatusCode::NO_CONTENT)
}
