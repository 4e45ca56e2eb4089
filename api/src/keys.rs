//! API keys and the caller: roles, `GET /v1/me`, `POST /v1/keys` (and the admin route that creates keys in another
//! org), the key as the API shows it, and its list.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a key may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Uses the org's boxes.
    Member,
    /// Also manages the org's keys and snapshots.
    Admin,
    /// Also manages orgs, quotas, runners and join tokens.
    PlatformAdmin,
}

impl Role {
    /// The role's name on the wire (and in the database).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::PlatformAdmin => "platform_admin",
        }
    }

    /// The role named `s`, if any.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "platform_admin" => Some(Role::PlatformAdmin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/me`: the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// The key the request was made with.
    pub key_id: Uuid,
    /// The key's org.
    pub org_id: Uuid,
    /// The org's name.
    pub org_name: String,
    /// The key's role.
    pub role: Role,
}

/// `POST /v1/keys` and `POST /v1/admin/orgs/{org_id}/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for humans, 1 to 128 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub name: String,
    /// member (default) or admin. Platform admins may also create platform_admin keys in the platform org.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// An API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// The key's id.
    pub id: Uuid,
    /// Its org.
    pub org_id: Uuid,
    /// Its label.
    pub name: String,
    /// The key's visible prefix.
    pub prefix: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked (it no longer works).
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key just created, with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyCreated {
    /// The key.
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret key. Shown once: store it now.
    pub secret: String,
}

/// An org's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    /// Every key, revoked ones included.
    pub items: Vec<KeyView>,
}
