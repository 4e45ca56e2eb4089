//! The control plane's store: the SQL statements of the API and the box lifecycle, one module per table. Every
//! statement on `boxes` and `executions` lives here; nothing else in the crate writes a box's state (the lifecycle
//! layer decides, the store writes, checked against the state machine and the row's generation). The API handlers
//! hold no SQL.

pub mod audit;
pub mod boxes;
pub mod executions;
pub mod idempotency;
pub mod join_tokens;
pub mod keys;
pub mod orgs;
pub mod placement;
pub mod runners;

use uuid::Uuid;

use crate::error::ApiError;
use crate::machine::BoxState;

/// A write the store refused, or a database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone changed the box since it was read: re-read it and decide again.
    #[error("box {id} changed meanwhile; retry")]
    Stale {
        /// The box.
        id: Uuid,
    },
    /// The state machine does not allow this edge (a bug in the caller).
    #[error("box {id} cannot go from {from} to {to}")]
    Illegal {
        /// The box.
        id: Uuid,
        /// Its state.
        from: BoxState,
        /// The state asked for.
        to: BoxState,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Stale { id } => {
                ApiError::conflict("invalid_state", format!("box {id} is being changed by another request; retry"))
                    .retry_after(1)
            }
            StoreError::Illegal { .. } => {
                tracing::error!("{e}");
                ApiError::internal(e.to_string())
            }
            StoreError::Db(e) => e.into(),
        }
    }
}
