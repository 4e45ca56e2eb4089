//! Boxes: `POST /v1/boxes` and its `wait` parameter, the box as the API shows it, the list and its filters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::state::{BoxState, DesiredState};

/// `POST /v1/boxes`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBox {
    /// A label for humans (not unique), at most 128 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The snapshot to boot, by name or id (absent: the runner's default image).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// vCPUs, 1 to 256 (default: the platform's, see `GET /v1/config`; the quota may allow fewer).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    /// Memory in MiB, 64 to 1048576 (default: the platform's; the quota may allow less).
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 1048576))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// The box's writable disk in MiB, 64 to 16777216 (default: the platform's; the quota may allow less).
    #[cfg_attr(feature = "openapi", schema(minimum = 64, maximum = 16777216))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<i64>,
    /// Environment for every execution in the box.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::env_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Your labels, returned as given and usable as a list filter.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::label_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Place the box only on runners that have all these labels.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::label_map))]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runner_selector: BTreeMap<String, String>,
    /// Stop the box after this many seconds without activity (running execution, attach, output); 1 to 31536000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31536000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_seconds: Option<i64>,
    /// Delete the box this many seconds after its creation; 1 to 31536000 (a year).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 31536000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// The `wait` query parameter of `POST /v1/boxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WaitParam {
    /// Wait until the box runs (default true). false: answer 202 at once with the box `pending`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// A box, as every box endpoint returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoxView {
    /// The box's id.
    pub id: Uuid,
    /// Its label for humans.
    pub name: Option<String>,
    /// The snapshot it boots (null: the runner's default image).
    pub snapshot: Option<String>,
    /// Its vCPUs.
    pub vcpus: i32,
    /// Its memory, MiB.
    pub memory_mib: i64,
    /// Its writable disk, MiB.
    pub disk_mib: i64,
    /// Environment for every execution in the box.
    pub env: BTreeMap<String, String>,
    /// The labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// The runner labels the box was placed by.
    pub runner_selector: BTreeMap<String, String>,
    /// pending, starting, running, stopping, stopped, error or lost.
    pub state: BoxState,
    /// running, stopped or deleted.
    pub desired_state: DesiredState,
    /// Why the box is in its state (error, lost, stopped by the platform).
    pub reason: Option<String>,
    /// The runner's id (platform-internal; useful in support requests).
    pub runner_id: Option<Uuid>,
    /// Stop after this many idle seconds (null: never).
    pub auto_stop_seconds: Option<i32>,
    /// Deleted this many seconds after creation (null: never).
    pub ttl_seconds: Option<i32>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it last started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it last stopped.
    pub stopped_at: Option<DateTime<Utc>>,
    /// The last activity (execution, attach, output) that postpones auto-stop.
    pub last_activity_at: DateTime<Utc>,
}

/// The query of `GET /v1/boxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 200 (default 50).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[cfg_attr(feature = "openapi", param(format = Uuid))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Only boxes in this state.
    #[cfg_attr(feature = "openapi", param(value_type = Option<BoxState>))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only boxes with this label, as `key=value`.
    #[cfg_attr(feature = "openapi", param(pattern = "^[^=\\x00]{1,256}=[^\\x00]*$"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A page of boxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoxList {
    /// The boxes, oldest first.
    pub items: Vec<BoxView>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The query of the files endpoints (`PUT`/`GET /v1/boxes/{id}/files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct FilesParams {
    /// Upload: the absolute directory to unpack into. Download: the absolute path of a file or directory. At most
    /// 4096 characters.
    #[cfg_attr(feature = "openapi", param(pattern = "^/[^\\x00]*$", max_length = 4096))]
    pub path: String,
}

/// What an upload unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadResult {
    /// Bytes of file data written.
    pub bytes: u64,
    /// Archive entries unpacked.
    pub entries: u64,
}
