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

/// The `SELECT … FROM snapshots` that reads every column of a [`SnapshotRow`] (callers append a `WHERE`).
pub const SELECT_SNAPSHOT: &str = "SELECT id, org_id, name, state, reason, object_key, digest, size_bytes, metadata,
        created_at, updated_at FROM snapshots";

/// One row of `snapshots`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    /// The snapshot's id.
    pub id: Uuid,
    /// The owning org; None: published by a platform admin to every org.
    pub org_id: Option<Uuid>,
    /// The name boxes refer to it by (unique within its org).
    pub name: String,
    /// `uploading`, `verifying`, `active` or `failed` (see the module comment).
    pub state: String,
    /// Why the snapshot is `failed`; None otherwise.
    pub reason: Option<String>,
    /// The key of its image object in the snapshot bucket.
    pub object_key: String,
    /// `sha256:<hex>` of the image, once it is known (uploaded or checked).
    pub digest: Option<String>,
    /// The image's size in bytes, once it is known.
    pub size_bytes: Option<i64>,
    /// How executions run by default in boxes booted from it.
    pub metadata: Json<SnapshotMetadata>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its state or image last changed.
    pub updated_at: DateTime<Utc>,
}

impl SnapshotRow {
    /// The reference a runner gets in CreateBox to fetch and verify the image (empty digest and 0 size if unknown).
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

/// The snapshot with this id, in any state and of any org (callers check visibility).
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

/// What a new snapshot row records.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    /// Its id.
    pub id: Uuid,
    /// Its org (None: published to every org).
    pub org: Option<Uuid>,
    /// Its name.
    pub name: &'a str,
    /// `uploading` or `verifying`.
    pub state: &'a str,
    /// Where its image is in the bucket.
    pub object_key: &'a str,
    /// Its metadata.
    pub metadata: &'a SnapshotMetadata,
    /// The key that created it.
    pub created_by: Uuid,
}

/// Inserts a snapshot row.
pub async fn insert(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, n: &NewSnapshot<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO snapshots (id, org_id, name, state, object_key, metadata, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(n.id)
    .bind(n.org)
    .bind(n.name)
    .bind(n.state)
    .bind(n.object_key)
    .bind(Json(n.metadata))
    .bind(n.created_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims a new or failed snapshot for an upload of its image (at most one at a time; a claim older than six hours
/// is taken over). False: not claimable.
pub async fn claim_upload(db: &sqlx::PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE snapshots SET state = 'uploading', uploading_since = now(), reason = NULL, updated_at = now()
          WHERE id = $1 AND state IN ('uploading', 'failed') AND object_key = $2
            AND (uploading_since IS NULL OR uploading_since < now() - interval '6 hours')",
    )
    .bind(id)
    .bind(format!("snapshots/{id}.ext4"))
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The snapshots `org` can use (its own and published ones), by name.
pub async fn visible_to(db: &sqlx::PgPool, org: Uuid) -> Result<Vec<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(sql!("{SELECT_SNAPSHOT} WHERE org_id = $1 OR org_id IS NULL ORDER BY name, id"))
        .bind(org)
        .fetch_all(db)
        .await
}

/// Locks a snapshot's row; true when an upload or a check is in progress.
pub async fn lock_busy(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT state = 'verifying' OR uploading_since IS NOT NULL FROM snapshots WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await
}

/// Removes a snapshot row.
pub async fn delete(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}
