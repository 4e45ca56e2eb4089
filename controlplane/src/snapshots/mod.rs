//! Snapshots: registration, image upload to S3 (streamed, hashed on the way), registration of an object already in
//! the bucket (checked against its expected digest), name resolution for boxes, and deletion.
//!
//! States: `uploading` (created, waiting for its image) → `active`, or `failed` with a reason (a failed snapshot
//! may be uploaded again); `verifying` while a registered object is checked. Only `active` snapshots boot boxes.
//! Snapshots belong to an org; platform admins may publish snapshots to every org (`org_id` NULL). Another org's
//! snapshot is invisible (404).

use axum::http::StatusCode;
use boxyard_proto::runner as pb;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How executions run by default in boxes booted from the snapshot (defined by the API contract).
pub use boxyard_api::SnapshotMetadata;

pub const SELECT_SNAPSHOT: &str = "SELECT id, org_id, name, state, reason, object_key, digest, size_bytes, metadata,
        created_at, updated_at FROM snapshots";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    pub id: Uuid,
    pub org_id: Option<Uuid>,
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub object_key: String,
    pub digest: Option<String>,
    pub size_bytes: Option<i64>,
    pub metadata: Json<SnapshotMetadata>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SnapshotRow {
    pub fn to_ref(&self) -> pb::SnapshotRef {
        pb::SnapshotRef {
            name: self.name.clone(),
            key: self.object_key.clone(),
            digest: self.digest.clone().unwrap_or_default(),
            size: self.size_bytes.unwrap_or(0) as u64,
        }
    }
}

/// The snapshot store of the control plane, or a clear error when none is configured.
pub fn store(st: &AppState) -> ApiResult<&boxyard_snapshot::s3::S3Store> {
    st.s3.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "snapshots_disabled",
            "this control plane has no snapshot bucket; start it with --s3-bucket (and --s3-endpoint, credentials)",
        )
    })
}

/// A snapshot visible to `org` (its own or a published one), by id.
pub async fn get(st: &AppState, org: Uuid, id: Uuid) -> ApiResult<SnapshotRow> {
    sqlx::query_as(sql!("{SELECT_SNAPSHOT} WHERE id = $1 AND (org_id = $2 OR org_id IS NULL)"))
        .bind(id)
        .bind(org)
        .fetch_optional(&st.db)
        .await?
        .ok_or_else(|| ApiError::not_found("snapshot", id))
}

/// Resolves a name for a box of `org`: the org's own snapshot first, then a published one. Must be active.
pub async fn resolve(st: &AppState, org: Uuid, name: &str) -> ApiResult<SnapshotRow> {
    let s: SnapshotRow = sqlx::query_as(sql!(
        "{SELECT_SNAPSHOT} WHERE name = $1 AND (org_id = $2 OR org_id IS NULL) ORDER BY org_id NULLS LAST LIMIT 1"
    ))
    .bind(name)
    .bind(org)
    .fetch_optional(&st.db)
    .await?
    .ok_or_else(|| ApiError::not_found("snapshot", format!("{name:?}")))?;
    if s.state != "active" {
        return Err(ApiError::conflict(
            "snapshot_not_ready",
            format!(
                "snapshot {name:?} is {}{}; boxes boot only from active snapshots",
                s.state,
                s.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
    Ok(s)
}

pub async fn load(db: &sqlx::PgPool, id: Uuid) -> Result<Option<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_SNAPSHOT} WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Records the outcome of an upload or a check.
pub async fn settle(db: &sqlx::PgPool, id: Uuid, outcome: Result<(u64, String), String>) -> Result<(), sqlx::Error> {
    match outcome {
        Ok((size, digest)) => {
            sqlx::query(
                "UPDATE snapshots SET state = 'active', digest = $2, size_bytes = $3, reason = NULL,
                        uploading_since = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(digest)
            .bind(size as i64)
            .execute(db)
            .await?;
        }
        Err(reason) => {
            sqlx::query(
                "UPDATE snapshots SET state = 'failed', reason = $2, digest = NULL, size_bytes = NULL,
                        uploading_since = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(reason)
            .execute(db)
            .await?;
        }
    }
    Ok(())
}
