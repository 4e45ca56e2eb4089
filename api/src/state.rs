//! The states of boxes and executions as the API names them: typed enums whose serde form is the exact wire string
//! (`"running"`, `"lost"`, ...), so a client matches on variants instead of string literals.
//!
//! Each enum also implements `Display`/`FromStr` with the same strings (the control plane stores them in text
//! columns), and compares equal to its string (`state == "running"`), which keeps assertions and logs readable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of a state enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {kind} (one of {})", names.join(", "))]
pub struct UnknownState {
    /// Which state enum was parsed ("box state", ...).
    pub kind: &'static str,
    /// The string that did not parse.
    pub value: String,
    /// The names that would have.
    pub names: &'static [&'static str],
}

/// Defines a state enum with its wire names, `as_str`, `ALL`, `Display`, `FromStr` and comparisons with strings.
macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        // Every wire name is its variant's name in snake case (the tests check it against `$wire`); spelled this
        // way rather than as a `rename` per variant because utoipa reads literal attributes only.
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every state, in the order of the lifecycle.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The wire names, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($wire),+];

            /// The name on the wire (and in the database).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: $kind, value: s.to_string(), names: Self::NAMES }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownState;

            fn try_from(s: String) -> Result<Self, UnknownState> {
                s.parse()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.as_str()
            }
        }
    };
}

state_enum! {
    /// Where a box is in its lifecycle (docs/api.md, "Box states").
    BoxState, "box state" {
        /// Accepted, not yet placed on a runner.
        Pending => "pending",
        /// Placed; its VM is booting.
        Starting => "starting",
        /// Its VM runs; executions may start.
        Running => "running",
        /// Its VM is shutting down.
        Stopping => "stopping",
        /// Its VM is off; its disk is kept.
        Stopped => "stopped",
        /// It failed to start or its VM failed (`reason` says why).
        Error => "error",
        /// Its runner stopped answering; the box may come back with it.
        Lost => "lost",
    }
}

state_enum! {
    /// What the owner asked a box to be; the control plane drives the box towards it.
    DesiredState, "desired state" {
        /// Started (created, or `start`ed).
        Running => "running",
        /// Stopped (`stop`, auto-stop).
        Stopped => "stopped",
        /// Deleted (`DELETE`, TTL).
        Deleted => "deleted",
    }
}

state_enum! {
    /// Where an execution is.
    ExecutionState, "execution state" {
        /// Its process runs (or its result is not known yet).
        Running => "running",
        /// It ended; its result (exit code, signal, error) is known.
        Finished => "finished",
        /// Its box stopped, was deleted or was lost before a result was known.
        Lost => "lost",
    }
}

impl BoxState {
    /// Whether the box holds resources on a runner (counts against capacity and quotas): starting, running,
    /// stopping.
    pub const fn is_active(self) -> bool {
        matches!(self, BoxState::Starting | BoxState::Running | BoxState::Stopping)
    }
}

/// A runner's state of a box, in the API's words (a runner's `failed` box is an `error` box).
#[cfg(feature = "proto")]
impl From<boxyard_proto::runner::BoxState> for BoxState {
    fn from(s: boxyard_proto::runner::BoxState) -> Self {
        use boxyard_proto::runner::BoxState as Runner;
        match s {
            Runner::Starting => BoxState::Starting,
            Runner::Running => BoxState::Running,
            Runner::Stopping => BoxState::Stopping,
            Runner::Stopped => BoxState::Stopped,
            Runner::Failed | Runner::Unspecified => BoxState::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant goes through serde and `FromStr` as its wire string and back, and the names are the ones the
    /// API has always used.
    fn round_trip<T>(all: &[T], names: &[&str])
    where
        T: Copy + fmt::Debug + PartialEq + fmt::Display + FromStr<Err = UnknownState> + Serialize,
        T: for<'de> Deserialize<'de>,
    {
        assert_eq!(all.len(), names.len());
        for (s, name) in all.iter().zip(names) {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *s);
            assert_eq!(s.to_string(), *name);
            assert_eq!(name.parse::<T>().unwrap(), *s);
        }
        let e = "bogus".parse::<T>().unwrap_err();
        assert_eq!(e.value, "bogus");
        assert!(serde_json::from_str::<T>("\"Running\"").is_err(), "names are case-sensitive");
    }

    #[test]
    fn box_states_round_trip_through_their_wire_strings() {
        round_trip(BoxState::ALL, &["pending", "starting", "running", "stopping", "stopped", "error", "lost"]);
        assert_eq!(BoxState::NAMES, ["pending", "starting", "running", "stopping", "stopped", "error", "lost"]);
    }

    #[test]
    fn desired_states_round_trip_through_their_wire_strings() {
        round_trip(DesiredState::ALL, &["running", "stopped", "deleted"]);
    }

    #[test]
    fn execution_states_round_trip_through_their_wire_strings() {
        round_trip(ExecutionState::ALL, &["running", "finished", "lost"]);
    }

    #[cfg(feature = "proto")]
    #[test]
    fn runner_states_have_the_api_names() {
        use boxyard_proto::runner::BoxState as Runner;
        let names: Vec<&str> = [Runner::Starting, Runner::Running, Runner::Stopping, Runner::Stopped, Runner::Failed]
            .into_iter()
            .map(|s| BoxState::from(s).as_str())
            .collect();
        assert_eq!(names, ["starting", "running", "stopping", "stopped", "error"]);
    }

    #[test]
    fn states_compare_with_their_strings() {
        assert_eq!(BoxState::Running, "running");
        assert!(BoxState::Error != "failed");
        assert!("lost" == ExecutionState::Lost);
        let e = "failed".parse::<BoxState>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"failed\" is not a box state (one of pending, starting, running, stopping, stopped, error, lost)"
        );
    }
}
