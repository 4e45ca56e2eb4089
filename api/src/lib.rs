//! Boxyard's public API contract: one definition of everything a client and the control plane exchange (see
//! docs/api.md).
//!
//! - [`state`]: the box, desired and execution states, with the exact strings of the wire;
//! - [`boxes`], [`executions`], [`snapshots`], [`keys`], [`admin`]: the REST request and response bodies and the
//!   query parameters, by resource;
//! - [`error`]: the error body and the stable error codes;
//! - [`attach`]: the frames of the WebSocket attach (binary output records, JSON text messages both ways);
//! - `schema` (with `openapi`): the value rules utoipa's attributes cannot spell, and the limits;
//! - [`size`]: byte sizes as the command-line tools spell them (`512M`, `2GiB`).
//!
//! The control plane serializes these types as its responses and deserializes its requests with them; the SDK does
//! the reverse, so the two cannot drift. With the `openapi` feature the types also derive utoipa's `ToSchema` /
//! `IntoParams`, from which the control plane generates its OpenAPI document; the SDK builds without it.

#![warn(missing_docs)]

pub mod admin;
pub mod attach;
pub mod boxes;
pub mod error;
pub mod executions;
pub mod keys;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod size;
pub mod snapshots;
pub mod state;

pub use admin::*;
pub use attach::ExitResult;
pub use boxes::*;
pub use error::ErrorBody;
pub use executions::*;
pub use keys::*;
pub use snapshots::*;
pub use state::{BoxState, DesiredState, ExecutionState, UnknownState};

#[cfg(test)]
mod wire_tests;
