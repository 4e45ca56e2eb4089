//! The control plane's store: every SQL statement on `boxes` and `executions` (and placement's reads of runner
//! load) lives here, one module per table. Nothing else in the crate writes a box's state; the lifecycle layer
//! decides, the store writes, checked against the state machine and the row's generation.

pub mod boxes;
pub mod executions;
pub mod orgs;
pub mod placement;

use uuid::Uuid;

use crate::error::ApiError;
use crate::lifecycle::machine::BoxState;

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
