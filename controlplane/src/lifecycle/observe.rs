//! Heartbeat reconciliation, decided without I/O: what a runner's report of a box means for our record of it.
//!
//! Ordering uses versions, not time windows. A runner stamps every state change of a box with a **state version**
//! (strictly increasing per box, on the runner's clock) and every inventory with the version it was taken at. The
//! control plane records the highest version it applied to each box (`observed_version`, from call answers and
//! heartbeats alike), so:
//!
//! - a report no newer than what was applied is stale (an inventory taken before a placement or a start finished)
//!   and is ignored;
//! - a box we placed that an inventory lacks is lost only if we last heard of it before that inventory was taken
//!   (a box created after it is not in it yet);
//! - when the control plane itself decides a box is lost, its observed version is reset, so the runner's next report
//!   wins whatever it says (the runner came back).

use uuid::Uuid;

use crate::machine::{BoxRules, BoxState};

/// Our record of a box, as far as reconciliation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Its state here.
    pub state: BoxState,
    /// Deleted by the user.
    pub deleted: bool,
    /// The runner it is placed on.
    pub runner_id: Option<Uuid>,
    /// The highest runner state version applied to it (0: none; any report wins).
    pub observed_version: u64,
}

/// A runner's report of one box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The state it has there, in our terms.
    pub state: BoxState,
    /// Its state version on the runner.
    pub version: u64,
}

/// What to do with a reported box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Unknown here, deleted, or placed elsewhere: the runner must destroy it.
    Destroy,
    /// Nothing to change.
    Keep,
    /// Older than what we applied (or a placement in flight owns the box).
    Stale,
    /// Record the runner's state (and its version).
    Apply {
        /// The new state.
        to: BoxState,
        /// The box was lost and its runner is back.
        came_back: bool,
    },
}

/// Decides what a report from runner `runner` means for a box we know as `known` (None: unknown here).
pub fn reported(known: Option<&Known>, runner: Uuid, report: Report) -> Decision {
    let Some(k) = known else { return Decision::Destroy };
    if k.deleted || k.runner_id != Some(runner) {
        return Decision::Destroy;
    }
    if !k.state.accepts_reports() || (k.observed_version != 0 && report.version <= k.observed_version) {
        return Decision::Stale;
    }
    if report.state == k.state {
        // Same state, newer version: nothing to change but the version.
        return Decision::Apply { to: k.state, came_back: false };
    }
    if !k.state.can_become(report.state) {
        return Decision::Keep;
    }
    Decision::Apply { to: report.state, came_back: k.state == BoxState::Lost }
}

/// Whether a box we placed on a runner, absent from that runner's inventory taken at `inventory_version`, is lost.
/// Only settled boxes can be: a placement or a start in flight owns its box, and a box we last heard of after the
/// inventory was taken is simply newer than it.
pub fn missing_is_lost(k: &Known, inventory_version: u64) -> bool {
    !k.deleted
        && matches!(k.state, BoxState::Running | BoxState::Stopping | BoxState::Stopped | BoxState::Error)
        && k.observed_version < inventory_version
}

#[cfg(test)]
mod tests {
    use super::*;
    use BoxState::*;

    const R: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);

    fn known(state: BoxState, observed: u64) -> Known {
        Known { state, deleted: false, runner_id: Some(R), observed_version: observed }
    }

    fn report(state: BoxState, version: u64) -> Report {
        Report { state, version }
    }

    #[test]
    fn unknown_deleted_or_elsewhere_is_destroyed() {
        assert_eq!(reported(None, R, report(Running, 5)), Decision::Destroy);
        let mut k = known(Running, 1);
        k.deleted = true;
        assert_eq!(reported(Some(&k), R, report(Running, 5)), Decision::Destroy);
        assert_eq!(reported(Some(&known(Running, 1)), OTHER, report(Running, 5)), Decision::Destroy);
    }

    #[test]
    fn newer_report_is_applied() {
        assert_eq!(
            reported(Some(&known(Running, 10)), R, report(Stopped, 11)),
            Decision::Apply { to: Stopped, came_back: false }
        );
        assert_eq!(
            reported(Some(&known(Running, 10)), R, report(Error, 12)),
            Decision::Apply { to: Error, came_back: false }
        );
    }

    /// The race the old time window papered over: the runner took its inventory while the box was starting, the
    /// placement then finished (answer: running, version 20), and the heartbeat with the older inventory arrives.
    #[test]
    fn reordered_heartbeat_does_not_set_a_box_back() {
        let k = known(Running, 20);
        assert_eq!(reported(Some(&k), R, report(Starting, 19)), Decision::Stale);
        // The same version again (a duplicate heartbeat) changes nothing either.
        assert_eq!(reported(Some(&k), R, report(Running, 20)), Decision::Stale);
        // A stop that finished here (stopped at 30) and an inventory from before it (running at 20).
        assert_eq!(reported(Some(&known(Stopped, 30)), R, report(Running, 20)), Decision::Stale);
    }

    #[test]
    fn placements_in_flight_own_their_box() {
        assert_eq!(reported(Some(&known(Pending, 0)), R, report(Running, 5)), Decision::Stale);
    }

    #[test]
    fn starting_box_takes_a_newer_report() {
        // A placement whose answer got lost: the runner's report of running is the truth.
        assert_eq!(
            reported(Some(&known(Starting, 3)), R, report(Running, 4)),
            Decision::Apply { to: Running, came_back: false }
        );
    }

    #[test]
    fn lost_box_takes_whatever_the_returning_runner_says() {
        // Lost resets the observed version: even the very report that was last applied wins again.
        let k = known(Lost, 0);
        assert_eq!(reported(Some(&k), R, report(Running, 1)), Decision::Apply { to: Running, came_back: true });
        assert_eq!(reported(Some(&k), R, report(Stopped, 1)), Decision::Apply { to: Stopped, came_back: true });
    }

    #[test]
    fn same_state_newer_version_only_moves_the_version() {
        assert_eq!(
            reported(Some(&known(Running, 5)), R, report(Running, 6)),
            Decision::Apply { to: Running, came_back: false }
        );
    }

    #[test]
    fn missing_boxes() {
        // Heard of before the inventory was taken, and absent from it: lost.
        assert!(missing_is_lost(&known(Running, 10), 11));
        assert!(missing_is_lost(&known(Stopped, 10), 11));
        // Created after the inventory was taken: just newer than it.
        assert!(!missing_is_lost(&known(Running, 12), 11));
        // In flight, deleted, or already lost: not our call here.
        assert!(!missing_is_lost(&known(Starting, 1), 11));
        assert!(!missing_is_lost(&known(Pending, 0), 11));
        assert!(!missing_is_lost(&known(Lost, 0), 11));
        let mut k = known(Running, 1);
        k.deleted = true;
        assert!(!missing_is_lost(&k, 11));
    }
}
