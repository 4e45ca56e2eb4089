//! Snapshots: their metadata (also the `IMAGE.json` written beside a built image), registration, the snapshot as
//! the API shows it, and its list.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How executions run by default in boxes booted from a snapshot (an execution's own settings win).
///
/// The one definition: the image builder writes it beside an image, the API takes it at registration and returns
/// it, and the control plane hands it to runners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotMetadata {
    /// Default command (argv) when an execution gives none. Empty: none.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::argv))]
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Environment of every execution (the box's and the execution's own env win).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::env_map))]
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default working directory, absolute, at most 4096 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 4096, pattern = "^(/[^\\x00]*)?$"))]
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Default user (a name in the image, a uid, or uid:gid), at most 256 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 256, pattern = "^([^:\\x00]*|[0-9]{1,9}:[0-9]{1,9})$"))]
    #[serde(default)]
    pub user: Option<String>,
}

/// `POST /v1/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Unique in the org: `[a-z0-9][a-z0-9._-]*`, at most 63 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9][a-z0-9._-]*$", max_length = 63, example = "python-3.12")
    )]
    pub name: String,
    /// Publish to every org (platform admins only).
    #[serde(default)]
    pub public: bool,
    /// Defaults for executions in boxes of the snapshot.
    #[serde(default)]
    pub metadata: SnapshotMetadata,
    /// Register an image already in the bucket instead of uploading one: it is checked against `digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ExistingObject>,
}

/// An image already in the snapshot bucket (the `source` of a snapshot's registration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExistingObject {
    /// Object key in the snapshot bucket, 1 to 1024 characters (not under `snapshots/`: reserved for uploaded images).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
    pub key: String,
    /// Expected `sha256:<64 lowercase hex>` of the object.
    #[cfg_attr(feature = "openapi", schema(pattern = "^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
}

/// A snapshot, as every snapshot endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotView {
    /// The snapshot's id.
    pub id: Uuid,
    /// Its name, unique in its org.
    pub name: String,
    /// Null for snapshots published to every org.
    pub org_id: Option<Uuid>,
    /// uploading, verifying, active or failed.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// `sha256:<hex>` of the image, once stored.
    pub digest: Option<String>,
    /// The image's size, once stored.
    pub size_bytes: Option<i64>,
    /// Defaults for executions in its boxes.
    pub metadata: SnapshotMetadata,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The snapshots the caller can use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotList {
    /// Its own org's and the published snapshots.
    pub items: Vec<SnapshotView>,
}
