//! Signal names on the wire.
//!
//! Signals travel as text ("TERM", "SIGTERM" or "15") so that every error about them can name what was asked for.
//! [`parse`] accepts all three forms; results are reported by their canonical `SIG…` name.

/// Standard Linux signals: (number, canonical name).
pub const SIGNALS: &[(i32, &str)] = &[
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

/// Why a signal name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?}: use a name like TERM, SIGKILL or INT, or a number from 1 to 31")]
pub struct UnknownSignal(pub String);

/// Parses "TERM", "SIGTERM", "sigterm" or "15" into a signal number.
pub fn parse(text: &str) -> Result<i32, UnknownSignal> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return SIGNALS.iter().find(|(num, _)| *num == n).map(|(n, _)| *n).ok_or_else(|| UnknownSignal(text.into()));
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(_, name)| &name[3..] == bare).map(|(n, _)| *n).ok_or_else(|| UnknownSignal(text.into()))
}

/// The canonical name of a signal number ("SIG15" style for numbers outside the table).
pub fn name(num: i32) -> String {
    SIGNALS.iter().find(|(n, _)| *n == num).map(|(_, s)| s.to_string()).unwrap_or_else(|| format!("SIG{num}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(parse("TERM"), Ok(15));
        assert_eq!(parse("SIGKILL"), Ok(9));
        assert_eq!(parse("sigint"), Ok(2));
        assert_eq!(parse("10"), Ok(10));
        assert_eq!(name(9), "SIGKILL");
    }

    #[test]
    fn refuses_unknown() {
        assert!(parse("BOGUS").is_err());
        assert!(parse("0").is_err());
        assert!(parse("64").is_err());
        assert!(parse("").is_err());
        assert!(parse("SIG").is_err());
        assert!(parse("BOGUS").unwrap_err().to_string().contains("BOGUS"));
    }
}
