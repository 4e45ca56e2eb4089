//! The box lifecycle layer: the one road from the API handlers, the reconciler and the registry to box and
//! execution state and to the runners that hold them.
//!
//! - [`observe`]: what a runner's report means for our record, ordered by versions (pure);
//! - [`boxes`]: create, place, start, stop, delete, lose;
//! - [`executions`]: create, refresh, kill, signal, resize, and mirroring runner results;
//! - [`heartbeat`]: applying a runner's inventory.
//!
//! The states and the table of legal transitions are in [`crate::machine`]. Decisions are made here and written through [`crate::store`], which owns every statement on boxes and
//! executions.

pub mod boxes;
pub mod executions;
pub mod heartbeat;
pub mod observe;
pub mod streams;

use uuid::Uuid;

use crate::state::AppState;

/// Records activity on a box (postpones its auto-stop). Failures are logged, never returned: activity is a hint.
pub async fn touch(st: &AppState, id: Uuid) {
    if let Err(e) = crate::store::boxes::touch(&st.db, &[id]).await {
        tracing::debug!(box_id = %id, "cannot record activity: {e}");
    }
}
