//! The database: connecting (with retries, so a control plane can start before its database), the embedded
//! migrations, and the bootstrap of the platform org and its first admin key.
//!
//! Queries are checked at run time (`sqlx::query`), so nothing here needs a database to compile.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::auth;
use crate::config::Quota;

/// The org that platform admins belong to.
pub const PLATFORM_ORG: &str = "platform";

/// Why the control plane could not get its database ready at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be opened before the start-up deadline.
    #[error("cannot connect to the database at {url}: {source}; check --database-url and that Postgres is running")]
    Connect {
        /// The database URL that was tried (its password redacted).
        url: String,
        /// The last connection error.
        source: sqlx::Error,
    },
    /// An embedded migration failed to apply.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement of the bootstrap failed.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// The bootstrap key given (`--bootstrap-key` or its file) is not in the API key format.
    #[error("the bootstrap key {0:?} is not a valid API key (expected byk_<12 hex>_<48 hex>)")]
    BadBootstrapKey(String),
}

/// Opens a pool. Connections are checked before use, so a restarted database is picked up without a restart.
pub async fn connect(url: &str, max_connections: u32, wait: Duration) -> Result<PgPool, DbError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let r = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(60))
            .test_before_acquire(true)
            .connect(url)
            .await;
        match r {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("database not reachable yet ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(source) => return Err(DbError::Connect { url: redact(url), source }),
        }
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Applies the embedded migrations (safe to run from several replicas at once: sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// Creates the platform org if needed, and a platform admin key if none exists.
///
/// `key`: a key to install (from the environment or a file), else one is generated. Returns the new key's value
/// when one was created (to be shown once).
pub async fn bootstrap(pool: &PgPool, key: Option<&str>, quota: &Quota) -> Result<Option<String>, DbError> {
    let mut tx = pool.begin().await?;
    // One bootstrap at a time across replicas.
    sqlx::query("SELECT pg_advisory_xact_lock(7020001)").execute(&mut *tx).await?;
    let org: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1").bind(PLATFORM_ORG).fetch_optional(&mut *tx).await?;
    let org = match org {
        Some(id) => id,
        None => create_org(&mut tx, PLATFORM_ORG, quota).await?,
    };
    let existing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE role = 'platform_admin' AND revoked_at IS NULL")
            .fetch_one(&mut *tx)
            .await?;
    let mut created = None;
    if existing == 0 {
        let (value, prefix, hash) = match key {
            Some(k) => {
                let p = auth::prefix_of("byk", k).ok_or_else(|| DbError::BadBootstrapKey(k.to_string()))?;
                (k.to_string(), p.to_string(), auth::hash(k))
            }
            None => {
                let s = auth::generate("byk");
                (s.value, s.prefix, s.hash)
            }
        };
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, prefix, hash, role) VALUES ($1, $2, 'bootstrap', $3, $4, 'platform_admin')",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(&prefix)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        audit(&mut *tx, None, Some(org), "key.bootstrap", &prefix, serde_json::json!({})).await?;
        created = Some(value);
    }
    tx.commit().await?;
    Ok(created)
}

/// Inserts an org with its quota row, in the caller's transaction; returns the new org's id.
pub async fn create_org(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    quota: &Quota,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, $2)").bind(id).bind(name).execute(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO org_quotas (org_id, max_boxes, max_vcpus, max_memory_mib, max_box_vcpus, max_box_memory_mib, max_box_disk_mib)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(quota.max_boxes)
    .bind(quota.max_vcpus)
    .bind(quota.max_memory_mib)
    .bind(quota.max_box_vcpus)
    .bind(quota.max_box_memory_mib)
    .bind(quota.max_box_disk_mib)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Appends to the audit log of admin actions.
pub async fn audit<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    actor_key: Option<Uuid>,
    actor_org: Option<Uuid>,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (actor_key, actor_org, action, target, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(actor_key)
        .bind(actor_org)
        .bind(action)
        .bind(target)
        .bind(details)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("postgres://u:secret@h:5/db"), "postgres://u@h:5/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
