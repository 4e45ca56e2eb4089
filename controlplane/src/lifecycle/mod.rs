//! The box lifecycle layer: the one road from the API handlers, the reconciler and the registry to box and
//! execution state and to the runners that hold them.
//!
//! - [`machine`]: typed states and the table of legal transitions (pure);
//! - [`observe`]: what a runner's report means for our record, ordered by versions (pure);
//! - [`boxes`]: create, place, start, stop, delete, lose;
//! - [`executions`]: create, refresh, kill, signal, resize, and mirroring runner results;
//! - [`heartbeat`]: applying a runner's inventory.
//!
//! Decisions are made here and written through [`crate::store`], which owns every statement on boxes and
//! executions.

pub mod boxes;
pub mod executions;
pub mod heartbeat;
pub mod machine;
pub mod observe;
pub mod streams;
