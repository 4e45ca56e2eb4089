//! Authentication and authorization: API keys, join tokens and runner credentials (generation and hashing), and the
//! [`Principal`] extractor that turns `Authorization: Bearer <key>` into an org and a role.
//!
//! Secrets are 192-bit random values. Only their SHA-256 is stored: with that much entropy a fast hash is enough, and
//! a slow password hash would cost every request. A key's prefix (part of the key itself) is stored in the clear so
//! that lists can identify keys and the lookup is one indexed row.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// What a key may do (defined by the API contract).
pub use boxyard_api::Role;

/// A freshly generated secret: the whole value (shown once), its public prefix and its hash.
pub struct Secret {
    /// The full secret, given to its owner once and never stored.
    pub value: String,
    /// `<kind>_<12 hex>`: stored in the clear, identifies the secret in lists and finds its row.
    pub prefix: String,
    /// SHA-256 of `value`: what the database keeps.
    pub hash: Vec<u8>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

/// The SHA-256 of a secret, as stored and compared (see the module comment for why a fast hash).
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// `<kind>_<prefix>_<secret>`: `byk` API keys, `byj` join tokens.
pub fn generate(kind: &str) -> Secret {
    let prefix = format!("{kind}_{}", random_hex(6));
    let value = format!("{prefix}_{}", random_hex(24));
    Secret { hash: hash(&value), value, prefix }
}

/// The prefix of a presented secret, if it has the right shape.
pub fn prefix_of<'a>(kind: &str, value: &'a str) -> Option<&'a str> {
    let rest = value.strip_prefix(kind)?.strip_prefix('_')?;
    let (p, s) = rest.split_once('_')?;
    if p.len() != 12 || s.len() != 48 || !p.bytes().chain(s.bytes()).all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(&value[..kind.len() + 1 + 12])
}

/// A runner's registry credential (no prefix: the runner id identifies the row).
pub fn runner_credential() -> (String, Vec<u8>) {
    let v = format!("byr_{}", random_hex(24));
    let h = hash(&v);
    (v, h)
}

/// Constant-time comparison of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller of an API request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key the request presented.
    pub key_id: Uuid,
    /// The org the key belongs to: the request sees only this org's objects.
    pub org_id: Uuid,
    /// What the key may do.
    pub role: Role,
}

impl Principal {
    /// Ok if the caller's role is `role` or above it; 403 `forbidden` naming both roles otherwise.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs a key with the {} role; this key is a {} key",
                role.as_str(),
                self.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <api key>` header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &h[7..]))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <api key>`"))?;
        authenticate(state, token).await
    }
}

type KeyLookup = (Uuid, Uuid, String, Vec<u8>, Option<chrono::DateTime<chrono::Utc>>, bool);

/// Checks an API key against the database.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let invalid =
        || ApiError::unauthorized("the API key is not valid (unknown or revoked); ask an org admin for a key");
    let prefix = prefix_of("byk", token).ok_or_else(invalid)?;
    let row: Option<KeyLookup> = sqlx::query_as(
        "SELECT id, org_id, role, hash, revoked_at,
                last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
           FROM api_keys WHERE prefix = $1",
    )
    .bind(prefix)
    .fetch_optional(&state.db)
    .await?;
    let Some((id, org_id, role, stored, revoked, stale)) = row else { return Err(invalid()) };
    if revoked.is_some() || !hashes_equal(&stored, &hash(token)) {
        return Err(invalid());
    }
    let role =
        Role::parse(&role).ok_or_else(|| ApiError::internal(format!("key {id} has an unknown role {role:?}")))?;
    if stale {
        // Best effort, at most once a minute per key.
        let _ = sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1").bind(id).execute(&state.db).await;
    }
    Ok(Principal { key_id: id, org_id, role })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_and_hash() {
        let s = generate("byk");
        assert_eq!(prefix_of("byk", &s.value), Some(s.prefix.as_str()));
        assert!(hashes_equal(&hash(&s.value), &s.hash));
        assert_eq!(prefix_of("byj", &s.value), None);
        assert_eq!(prefix_of("byk", "byk_abc_def"), None);
        assert_eq!(prefix_of("byk", &s.value[..s.value.len() - 1]), None);
        assert_ne!(generate("byk").value, s.value);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::PlatformAdmin > Role::Admin && Role::Admin > Role::Member);
        for r in [Role::Member, Role::Admin, Role::PlatformAdmin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
