//! The state every request handler and background task shares: the database pool, the configuration, the runner
//! connections and the metrics.

use std::sync::Arc;

use sqlx::PgPool;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runners::RunnerClients;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: PgPool,
    pub config: Config,
    pub runners: RunnerClients,
    pub metrics: Metrics,
    /// The snapshot bucket; None: snapshots are off.
    pub s3: Option<boxyard_snapshot::s3::S3Store>,
}

impl AppState {
    pub fn new(db: PgPool, config: Config) -> Self {
        Self::with_s3(db, config, None)
    }

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
