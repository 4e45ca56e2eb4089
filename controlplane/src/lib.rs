//! The Boxyard control plane: a stateless service on top of Postgres. Several replicas can run against one database.
//!
//! - [`api`]: the REST + WebSocket API gateway (`/v1`) and its OpenAPI document;
//! - [`auth`]: API keys, join tokens, runner credentials; the request principal;
//! - [`lifecycle`]: the box and execution state machines and every lifecycle operation (the API handlers, the
//!   reconciler and the registry all go through it); [`machine`]: the states and their table of legal transitions;
//!   [`store`]: every statement on boxes and executions;
//! - [`snapshots`]: snapshot registration, image upload to S3, name resolution;
//! - [`scheduler`]: runner selection and atomic capacity reservation;
//! - [`registry`]: the gRPC service runners register with and send heartbeats to;
//! - [`reconciler`]: the single-leader loop that drives actual state to desired state;
//! - [`runners`]: TLS connections to runner APIs;
//! - [`db`]: connection, migrations, bootstrap; [`config`], [`error`], [`metrics`], [`state`].

#![warn(missing_docs)]

/// A query text assembled from constant fragments (column lists, state sets) with `format!`: never from input.
/// Values always travel as bind parameters.
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod lifecycle;
pub mod machine;
pub mod metrics;
pub mod reconciler;
pub mod registry;
pub mod runners;
pub mod scheduler;
pub mod snapshots;
pub mod state;
pub mod store;

pub use boxyard_telemetry as telemetry;
