//! The box lifecycle layer: the one road from the API handlers, the reconciler and the registry to box and
//! execution state and to the runners that hold them.
//!
//! - [`observe`]: what a runner's report means for our record, ordered by versions (pure);
//! - [`boxes`]: create, start, stop, delete, lose; [`place`]: placement on a runner, with fallback;
//! - [`executions`]: create, refresh, kill, signal, resize, and mirroring runner results;
//! - [`heartbeat`]: applying a runner's inventory.
//!
//! The states and the table of legal transitions are in [`crate::machine`]. Decisions are made here and written through [`crate::store`], which owns every statement on boxes and
//! executions.

pub mod boxes;
pub mod executions;
pub mod heartbeat;
pub mod observe;
pub mod place;
pub mod streams;

use boxyard_proto::runner as pb;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::runners::{request, within};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::boxes::{self as store, BoxRow, Change};

/// Records activity on a box (postpones its auto-stop). A request fails with the database (as every other of its
/// statements would); a long-lived stream that only refreshes activity ignores the error.
pub async fn touch(st: &AppState, id: Uuid) -> Result<(), sqlx::Error> {
    crate::store::boxes::touch(&st.db, &[id]).await
}

/// Applies `decide(current)` to box `id`, re-reading it when another writer got there first. `decide` returns
/// None when the box is already where it should be (or elsewhere for good). Ok(None): the box is deleted.
pub(crate) async fn retry_stale(
    st: &AppState,
    id: Uuid,
    decide: impl Fn(&BoxRow) -> Option<Change>,
) -> ApiResult<Option<BoxRow>> {
    for _ in 0..8 {
        let Some(cur) = store::load(&st.db, id).await? else { return Ok(None) };
        if cur.deleted_at.is_some() {
            return Ok(None);
        }
        let Some(change) = decide(&cur) else { return Ok(Some(cur)) };
        match store::transition(&st.db, &cur, change).await {
            Ok(row) => return Ok(Some(row)),
            Err(StoreError::Stale { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Stale { id }.into())
}

/// Best effort: DestroyBox now; on failure the heartbeat reconciliation finishes the job.
pub async fn destroy_on_runner(st: &AppState, id: Uuid, runner: Uuid) {
    let r = async {
        let (_, mut client) = st.runners.for_runner(&st.db, runner).await?;
        let timeout = st.config.runner_call_timeout;
        within(timeout, client.destroy_box(request(pb::BoxRef { box_id: id.to_string() }, timeout))).await?;
        store::mark_destroyed(&st.db, id).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = r {
        tracing::info!(box_id = %id, "destroy deferred to the runner's next heartbeat: {e}");
    }
}
