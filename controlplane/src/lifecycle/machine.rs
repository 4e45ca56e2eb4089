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
//! [`super::observe`]).

use std::fmt;
use std::str::FromStr;

/// Where a box is in its life, as the control plane records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BoxState {
    /// Accepted, not yet on a runner.
    Pending,
    /// Reserved on a runner, booting.
    Starting,
    /// Its VM runs.
    Running,
    /// Powering off.
    Stopping,
    /// Powered off; its disk stays on its runner.
    Stopped,
    /// Placement or boot failed (see the reason).
    Error,
    /// Its runner disappeared or no longer has it.
    Lost,
}

impl BoxState {
    /// Every state, in life order.
    pub const ALL: [BoxState; 7] = [
        BoxState::Pending,
        BoxState::Starting,
        BoxState::Running,
        BoxState::Stopping,
        BoxState::Stopped,
        BoxState::Error,
        BoxState::Lost,
    ];

    /// The wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BoxState::Pending => "pending",
            BoxState::Starting => "starting",
            BoxState::Running => "running",
            BoxState::Stopping => "stopping",
            BoxState::Stopped => "stopped",
            BoxState::Error => "error",
            BoxState::Lost => "lost",
        }
    }

    /// States in which a box counts against its org's quota.
    pub const fn is_active(self) -> bool {
        matches!(self, BoxState::Pending | BoxState::Starting | BoxState::Running | BoxState::Stopping)
    }

    /// States in which a box holds a reservation on its runner.
    pub const fn holds_reservation(self) -> bool {
        matches!(self, BoxState::Starting | BoxState::Running | BoxState::Stopping)
    }

    /// Whether a runner's report may set this state (the runner owns the truth about placed boxes; a placement in
    /// flight owns its box until it finishes).
    pub const fn accepts_reports(self) -> bool {
        !matches!(self, BoxState::Pending)
    }

    /// The table of legal transitions. Same-state writes (a new reason, a released reservation) are not
    /// transitions and always allowed.
    pub const fn can_become(self, to: BoxState) -> bool {
        use BoxState::*;
        if self as u8 == to as u8 {
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

impl fmt::Display for BoxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}; expected one of: {expected}")]
pub struct UnknownState {
    /// Which kind of state.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// The names that exist, comma separated.
    pub expected: String,
}

fn unknown<T: Copy>(what: &'static str, name: &str, all: &[T], f: fn(T) -> &'static str) -> UnknownState {
    UnknownState { what, name: name.to_owned(), expected: all.iter().map(|s| f(*s)).collect::<Vec<_>>().join(", ") }
}

impl FromStr for BoxState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        BoxState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| unknown("box state", s, &BoxState::ALL, BoxState::as_str))
    }
}

impl TryFrom<String> for BoxState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, UnknownState> {
        s.parse()
    }
}

/// What the user asked a box to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesiredState {
    /// Keep it running.
    Running,
    /// Keep it stopped (disk kept).
    Stopped,
    /// Gone; its runner destroys it.
    Deleted,
}

impl DesiredState {
    /// Every desired state.
    pub const ALL: [DesiredState; 3] = [DesiredState::Running, DesiredState::Stopped, DesiredState::Deleted];

    /// The wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DesiredState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        DesiredState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| unknown("desired state", s, &DesiredState::ALL, DesiredState::as_str))
    }
}

impl TryFrom<String> for DesiredState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, UnknownState> {
        s.parse()
    }
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionState {
    /// Its process runs (as far as the control plane knows).
    Running,
    /// It ended; the result is recorded.
    Finished,
    /// Its box stopped, was deleted or lost before the runner could tell its result.
    Lost,
}

impl ExecutionState {
    /// Every execution state.
    pub const ALL: [ExecutionState; 3] = [ExecutionState::Running, ExecutionState::Finished, ExecutionState::Lost];

    /// The wire and database name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Running => "running",
            ExecutionState::Finished => "finished",
            ExecutionState::Lost => "lost",
        }
    }

    /// Legal execution transitions: running ends as finished or lost; a lost execution whose runner comes back
    /// with its result becomes finished; finished is final.
    pub const fn can_become(self, to: ExecutionState) -> bool {
        use ExecutionState::*;
        matches!((self, to), (Running, Finished) | (Running, Lost) | (Lost, Finished))
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        ExecutionState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| unknown("execution state", s, &ExecutionState::ALL, ExecutionState::as_str))
    }
}

impl TryFrom<String> for ExecutionState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, UnknownState> {
        s.parse()
    }
}

/// Our state for a state a runner reports.
pub fn from_runner(s: boxyard_proto::runner::BoxState) -> BoxState {
    use boxyard_proto::runner::BoxState as R;
    match s {
        R::Starting => BoxState::Starting,
        R::Running => BoxState::Running,
        R::Stopping => BoxState::Stopping,
        R::Stopped => BoxState::Stopped,
        R::Failed | R::Unspecified => BoxState::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BoxState::*;

    #[test]
    fn names_round_trip() {
        for s in BoxState::ALL {
            assert_eq!(s.as_str().parse::<BoxState>(), Ok(s));
        }
        for s in DesiredState::ALL {
            assert_eq!(s.as_str().parse::<DesiredState>(), Ok(s));
        }
        for s in ExecutionState::ALL {
            assert_eq!(s.as_str().parse::<ExecutionState>(), Ok(s));
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
            for to in BoxState::ALL {
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
        let active: Vec<_> = BoxState::ALL.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Pending, Starting, Running, Stopping]);
        let reserved: Vec<_> = BoxState::ALL.into_iter().filter(|s| s.holds_reservation()).collect();
        assert_eq!(reserved, [Starting, Running, Stopping]);
    }

    #[test]
    fn execution_transitions() {
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
