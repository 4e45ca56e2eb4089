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
}

impl AppState {
    pub fn new(db: PgPool, config: Config) -> Self {
        AppState(Arc::new(Shared { db, config, runners: RunnerClients::default(), metrics: Metrics::default() }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
