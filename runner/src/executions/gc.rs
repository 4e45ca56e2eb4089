//! Garbage collection of finished executions: their logs and results are deleted once they are older than the
//! configured time to live (`--finished-ttl`), checked every `--gc-interval`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::registry::Registry;
use crate::store;

/// Deletes the finished executions older than `ttl` (their attaches end with NOT_FOUND).
pub async fn collect(registry: &Registry, ttl: Duration) {
    let now = store::now_ms();
    let expired = registry.take_finished_before(now.saturating_sub(ttl.as_millis() as u64));
    if expired.is_empty() {
        return;
    }
    tracing::info!(count = expired.len(), "collecting finished executions past their retention time");
    let _ = tokio::task::spawn_blocking(move || {
        for e in expired {
            if let Err(err) = std::fs::remove_dir_all(&e.dir) {
                tracing::warn!(execution = e.id(), "cannot delete {}: {err}", e.dir.display());
            }
        }
    })
    .await;
}

/// Collects every `interval` until the registry is dropped.
pub fn spawn(registry: Weak<Registry>, ttl: Duration, interval: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(r) = registry.upgrade() else { return };
            collect(&r, ttl).await;
            drop::<Arc<Registry>>(r);
        }
    });
}
