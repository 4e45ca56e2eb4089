//! The state every request handler and background task shares: the database pool, the configuration, the runner
//! connections and the metrics.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runners::RunnerClients;

/// A cheap handle to the replica's [`Shared`] state (cloned into every handler and task; derefs to it).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What one control-plane replica holds for its whole life.
pub struct Shared {
    /// The Postgres pool every store module runs its statements on.
    pub db: PgPool,
    /// The replica's timings, limits and defaults.
    pub config: Config,
    /// Cached TLS connections to the runners' APIs.
    pub runners: RunnerClients,
    /// The Prometheus metrics served at `/metrics`.
    pub metrics: Metrics,
    /// The snapshot bucket; None: snapshots are off.
    pub s3: Option<boxyard_snapshot::s3::S3Store>,
}

impl AppState {
    /// The state of a replica without a snapshot bucket (snapshot endpoints answer that snapshots are off).
    pub fn new(db: PgPool, config: Config) -> Self {
        Self::with_s3(db, config, None)
    }

    /// The state of a replica that stores snapshot images in `s3` (None: snapshots are off).
    pub fn with_s3(db: PgPool, config: Config, s3: Option<boxyard_snapshot::s3::S3Store>) -> Self {
        AppState(Arc::new(Shared { db, config, runners: RunnerClients::default(), metrics: Metrics::default(), s3 }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
