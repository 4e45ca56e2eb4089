//! Applying a runner's heartbeat inventory to our records: box states (ordered by state versions, see
//! [`super::observe`]), finished executions, activity, boxes the runner no longer has (lost), and deleted boxes it
//! has (to destroy).

use std::collections::{HashMap, HashSet};

use boxyard_proto::runner as rpb;
use uuid::Uuid;

use super::observe::{self, Decision, Known, Report};
use crate::error::ApiResult;
use crate::machine::{self, BoxRules};
use crate::state::AppState;
use crate::store::boxes::{self as store, BoxRow, Change};
use crate::store::{StoreError, executions as exec_store};

fn known(b: &BoxRow) -> Known {
    Known {
        state: b.state,
        deleted: b.deleted_at.is_some(),
        runner_id: b.runner_id,
        observed_version: b.observed_version.max(0) as u64,
    }
}

/// Brings the boxes and executions of runner `id` (named `name`) in line with its inventory. Returns the boxes it
/// must destroy.
pub async fn reconcile(st: &AppState, id: Uuid, name: &str, inv: &rpb::Inventory) -> ApiResult<Vec<String>> {
    let reported: HashMap<Uuid, &rpb::BoxInfo> =
        inv.boxes.iter().filter_map(|b| Uuid::parse_str(&b.box_id).ok().map(|u| (u, b))).collect();
    let mut destroy: Vec<String> =
        inv.boxes.iter().filter(|b| Uuid::parse_str(&b.box_id).is_err()).map(|b| b.box_id.clone()).collect();
    let ids: Vec<Uuid> = reported.keys().copied().collect();
    let rows: HashMap<Uuid, BoxRow> = store::load_many(&st.db, &ids).await?.into_iter().map(|b| (b.id, b)).collect();
    let mut active = Vec::new();
    for (bid, info) in &reported {
        let row = rows.get(bid);
        let report = Report { state: machine::from_runner(info.state()), version: info.state_version };
        match observe::reported(row.map(known).as_ref(), id, report) {
            Decision::Destroy => destroy.push(info.box_id.clone()),
            Decision::Keep | Decision::Stale => {}
            Decision::Apply { to, came_back } => {
                let Some(row) = row else { continue };
                let mut change = Change::to(to).observed(report.version);
                if came_back {
                    change = change.reason(format!("runner {name} came back"));
                }
                if to.holds_reservation() && !row.reserved {
                    // It runs there whatever we think: it holds its share of the runner.
                    change = change.reserve();
                }
                if row.state != to {
                    tracing::info!(box_id = %bid, runner = %name, from = %row.state, %to, "box state reported by its runner");
                }
                match store::transition(&st.db, row, change).await {
                    Ok(_) | Err(StoreError::Stale { .. }) => {} // changed meanwhile: the next heartbeat decides
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if info.executions.iter().any(|e| e.state() == rpb::ExecutionState::Running) {
            active.push(*bid);
        }
    }
    // Finished executions whose record still says running, or lost (their runner was away and is back).
    let unsettled: HashSet<Uuid> = exec_store::unsettled_on(&st.db, id).await?.into_iter().collect();
    if !unsettled.is_empty() {
        for info in reported.values() {
            for e in &info.executions {
                if e.state() == rpb::ExecutionState::Finished
                    && Uuid::parse_str(&e.execution_id).is_ok_and(|x| unsettled.contains(&x))
                {
                    super::executions::observe(st, e).await?;
                }
            }
        }
    }
    if !active.is_empty() {
        store::touch(&st.db, &active).await?;
    }
    // Boxes we placed on this runner that its inventory lacks, heard of before the inventory was taken.
    for b in store::placed_on_except(&st.db, id, &ids).await? {
        if observe::missing_is_lost(&known(&b), inv.taken_version) {
            tracing::warn!(box_id = %b.id, runner = %name, "the runner no longer has this box: lost");
            let reason = format!("runner {name} no longer has this box (its state was lost)");
            super::boxes::lose(st, &b, &reason).await?;
        }
    }
    // Deleted boxes the runner no longer has are gone for good.
    store::mark_destroyed_absent(&st.db, id, &ids).await?;
    Ok(destroy)
}
