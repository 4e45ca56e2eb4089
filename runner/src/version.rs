//! State versions: the order of a box's state changes on this runner, for the control plane to tell a fresh report
//! from a stale one (see `BoxInfo.state_version` in runner.proto). Microseconds of the wall clock, bumped past
//! the previous version of the same box when the clock has not moved on (or went back).

/// Now, in microseconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The version of a state change that follows one at `prev` (0: the first).
pub fn next(prev: u64) -> u64 {
    now().max(prev + 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn strictly_increasing() {
        let mut v = 0;
        for _ in 0..10_000 {
            let n = super::next(v);
            assert!(n > v);
            v = n;
        }
        // A previous version ahead of the clock is still passed.
        let ahead = super::now() + 10_000_000;
        assert_eq!(super::next(ahead), ahead + 1);
    }
}
