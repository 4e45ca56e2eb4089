//! The platform (`GET /v1/config`) and its administration: orgs and their quotas, runners, join tokens and the audit
//! log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An org's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Boxes that are not stopped (pending, starting, running, stopping).
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_boxes: i32,
    /// Sum of the vCPUs of those boxes.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_vcpus: i32,
    /// Sum of their memory, MiB.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_memory_mib: i64,
    /// Largest box: vCPUs.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_box_vcpus: i32,
    /// Largest box: memory, MiB.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_box_memory_mib: i64,
    /// Largest box: writable disk, MiB.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub max_box_disk_mib: i64,
}

/// The platform's default quota of a new org.
impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_boxes: 20,
            max_vcpus: 32,
            max_memory_mib: 64 * 1024,
            max_box_vcpus: 8,
            max_box_memory_mib: 16 * 1024,
            max_box_disk_mib: 64 * 1024,
        }
    }
}

/// `GET /v1/config`: the platform's version and defaults, and the caller's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformConfig {
    /// The control plane's version.
    pub version: String,
    /// vCPUs of a box that asks for none.
    pub default_vcpus: u32,
    /// Memory (MiB) of a box that asks for none.
    pub default_memory_mib: u64,
    /// Writable disk (MiB) of a box that asks for none.
    pub default_disk_mib: u64,
    /// The caller's org quota.
    pub quota: Quota,
}

/// `POST /v1/admin/orgs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Unique: `[a-z0-9][a-z0-9-]*`, at most 63 characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9-]*$", max_length = 63, example = "acme"))]
    pub name: String,
    /// Defaults to the platform's default quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// An org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgView {
    /// The org's id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its limits.
    pub quota: Quota,
}

/// Every org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgList {
    /// The orgs.
    pub items: Vec<OrgView>,
}

/// A runner of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerView {
    /// The runner's id.
    pub id: Uuid,
    /// Its name (unique).
    pub name: String,
    /// Where the control plane reaches its gRPC API.
    pub address: String,
    /// ready, unresponsive or lost.
    pub state: String,
    /// Draining: no new boxes, before maintenance.
    pub draining: bool,
    /// Cordoned: no new boxes.
    pub cordoned: bool,
    /// Its labels (matched by `runner_selector`).
    pub labels: BTreeMap<String, String>,
    /// vCPUs it offers.
    pub capacity_vcpus: i32,
    /// Memory it offers, MiB.
    pub capacity_memory_mib: i64,
    /// Disk it offers, MiB.
    pub capacity_disk_mib: i64,
    /// Reserved by boxes placed there.
    pub allocated_vcpus: i64,
    /// Memory reserved by boxes placed there, MiB.
    pub allocated_memory_mib: i64,
    /// Boxes placed there (not deleted).
    pub boxes: i32,
    /// Of which running.
    pub running_boxes: i32,
    /// The runner's version.
    pub version: String,
    /// Its VM backend (qemu, local).
    pub backend: String,
    /// When it first registered.
    pub registered_at: DateTime<Utc>,
    /// When its last heartbeat arrived.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// Every runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunnerList {
    /// The runners.
    pub items: Vec<RunnerView>,
}

/// `POST /v1/admin/join-tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJoinToken {
    /// What the token is for (free text, at most 256 characters).
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    #[serde(default)]
    pub description: String,
    /// Lifetime in seconds, 60 to 2592000 (30 days); default 86400.
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 2592000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// A runner join token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenView {
    /// The token's id.
    pub id: Uuid,
    /// Its visible prefix.
    pub prefix: String,
    /// What it is for.
    pub description: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Runners registered with it.
    pub uses: i32,
}

/// A join token just issued, with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenCreated {
    /// The token.
    #[serde(flatten)]
    pub token: JoinTokenView,
    /// Pass to `boxyard-runner serve --join-token`. Shown once.
    pub secret: String,
}

/// Every join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinTokenList {
    /// The tokens, revoked and expired ones included.
    pub items: Vec<JoinTokenView>,
}

/// One admin action of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing with time.
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The key that acted.
    pub actor_key: Option<Uuid>,
    /// That key's org.
    pub actor_org: Option<Uuid>,
    /// What was done (`org.create`, `key.revoke`, ...).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The action's parameters.
    pub details: serde_json::Value,
}

/// The audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    /// The entries.
    pub items: Vec<AuditEntry>,
}

/// The query of `GET /v1/admin/audit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Newest entries first; at most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}
