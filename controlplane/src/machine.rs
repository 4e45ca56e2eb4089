//! The box and execution state machines: typed states, their wire names, and the table of legal transitions.
//! Pure (no I/O): the store checks every state change against [`BoxState::can_become`] before it writes it.
//!
//! ```text
//!             place                boot ok                 stop              powered off
//!  pending ──────────► starting ───────────► running ───────────► stopping ───────────► stopped
//!     ▲  ◄──────────────  │  ▲                 │                                          │
//!     │   runner failed,  │  └──────────────────┼──────────── start ──────────────────────┘
//!     │   next candidate  │ no runner / bad spec│ its runner vanished (any placed state)
//!     └─── retry ──── error ◄─────────────────┘     └──────────► lost ──► (the runner came back: what it reports)
//! ```
//!
//! A runner's report (a heartbeat's inventory or the answer to a call) is the truth about a placed box: any placed
//! state may become any state a runner reports, provided the report is newer than the last one applied (see
//! [`crate::lifecycle::observe`]).

pub use boxyard_api::state::{BoxState, DesiredState, ExecutionState, UnknownState};

/// The box state machine's rules, on the contract's [`BoxState`].
pub trait BoxRules: Copy {
    /// States in which a box counts against its org's quota.
    fn counts_against_quota(self) -> bool;
    /// States in which a box holds a reservation on its runner.
    fn holds_reservation(self) -> bool;
    /// Whether a runner's report may set this state (the runner owns the truth about placed boxes; a placement in
    /// flight owns its box until it finishes).
    fn accepts_reports(self) -> bool;
    /// The table of legal transitions. Same-state writes (a new reason, a released reservation) are not
    /// transitions and always allowed.
    fn can_become(self, to: BoxState) -> bool;
}

impl BoxRules for BoxState {
    fn counts_against_quota(self) -> bool {
        matches!(self, BoxState::Pending | BoxState::Starting | BoxState::Running | BoxState::Stopping)
    }

    fn holds_reservation(self) -> bool {
        matches!(self, BoxState::Starting | BoxState::Running | BoxState::Stopping)
    }

    fn accepts_reports(self) -> bool {
        !matches!(self, BoxState::Pending)
    }

    fn can_become(self, to: BoxState) -> bool {
        use BoxState::*;
        if self == to {
            return true;
        }
        match self {
            // Placement reserves a runner, or fails as a whole.
            Pending => matches!(to, Starting | Error),
            // A boot finishes, fails (next candidate: pending; the request's fault: error; a start of a stopped
            // box: back to stopped), or its runner vanishes; a runner may report it stopping.
            Starting => matches!(to, Pending | Running | Stopping | Stopped | Error | Lost),
            Running => matches!(to, Starting | Stopping | Stopped | Error | Lost),
            Stopping => matches!(to, Starting | Running | Stopped | Error | Lost),
            // Start reserves its runner again; a runner may report it running (a start that timed out here).
            Stopped => matches!(to, Starting | Running | Stopping | Error | Lost),
            // A box that was never placed may be tried again; a placed one may be reported by its runner.
            Error => matches!(to, Pending | Starting | Running | Stopping | Stopped | Lost),
            // Its runner came back: whatever it reports.
            Lost => matches!(to, Starting | Running | Stopping | Stopped | Error),
        }
    }
}

/// The execution state machine's rules, on the contract's [`ExecutionState`].
pub trait ExecutionRules: Copy {
    /// Legal execution transitions: running ends as finished or lost; a lost execution whose runner comes back
    /// with its result becomes finished; finished is final.
    fn can_become(self, to: ExecutionState) -> bool;
}

impl ExecutionRules for ExecutionState {
    fn can_become(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        matches!((self, to), (Running, Finished) | (Running, Lost) | (Lost, Finished))
    }
}

/// Our state for a state a runner reports (a runner's `failed` box is an `error` box).
pub fn from_runner(s: boxyard_proto::runner::BoxState) -> BoxState {
    BoxState::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BoxState::*;

    #[test]
    fn names_round_trip() {
        for s in BoxState::ALL {
            assert_eq!(s.as_str().parse::<BoxState>(), Ok(*s));
            assert_eq!(BoxState::try_from(s.as_str().to_string()), Ok(*s));
        }
        for s in DesiredState::ALL {
            assert_eq!(s.as_str().parse::<DesiredState>(), Ok(*s));
        }
        for s in ExecutionState::ALL {
            assert_eq!(s.as_str().parse::<ExecutionState>(), Ok(*s));
        }
        let e = "failed".parse::<BoxState>().unwrap_err();
        assert!(e.to_string().contains("pending, starting, running, stopping, stopped, error, lost"), "{e}");
    }

    /// The whole table, written out: a change to it must change this test.
    #[test]
    fn transition_table() {
        let legal: &[(BoxState, &[BoxState])] = &[
            (Pending, &[Pending, Starting, Error]),
            (Starting, &[Pending, Starting, Running, Stopping, Stopped, Error, Lost]),
            (Running, &[Starting, Running, Stopping, Stopped, Error, Lost]),
            (Stopping, &[Starting, Running, Stopping, Stopped, Error, Lost]),
            (Stopped, &[Starting, Running, Stopping, Stopped, Error, Lost]),
            (Error, &[Pending, Starting, Running, Stopping, Stopped, Error, Lost]),
            (Lost, &[Starting, Running, Stopping, Stopped, Error, Lost]),
        ];
        for (from, tos) in legal {
            for to in BoxState::ALL.iter().copied() {
                assert_eq!(from.can_become(to), tos.contains(&to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn nothing_goes_back_to_pending_once_it_ran() {
        for from in [Running, Stopping, Stopped, Lost] {
            assert!(!from.can_become(Pending), "{from} -> pending");
        }
    }

    #[test]
    fn quota_and_reservation_states() {
        let active: Vec<_> = BoxState::ALL.iter().copied().filter(|s| s.counts_against_quota()).collect();
        assert_eq!(active, [Pending, Starting, Running, Stopping]);
        let reserved: Vec<_> = BoxState::ALL.iter().copied().filter(|s| s.holds_reservation()).collect();
        assert_eq!(reserved, [Starting, Running, Stopping]);
    }

    #[test]
    fn execution_transitions() {
        use super::ExecutionRules;
        use ExecutionState as E;
        assert!(E::Running.can_become(E::Finished));
        assert!(E::Running.can_become(E::Lost));
        assert!(E::Lost.can_become(E::Finished));
        assert!(!E::Finished.can_become(E::Running));
        assert!(!E::Finished.can_become(E::Lost));
        assert!(!E::Lost.can_become(E::Running));
    }

    #[test]
    fn runner_states_map_to_ours() {
        use boxyard_proto::runner::BoxState as R;
        assert_eq!(from_runner(R::Running), Running);
        assert_eq!(from_runner(R::Failed), Error);
        assert_eq!(from_runner(R::Unspecified), Error);
        assert_eq!(from_runner(R::Stopped), Stopped);
    }
}
