//! Refusing replays: each sender's sequence numbers must be new (a sliding window over the
//! highest seen, so reordering on the way is tolerated) and its timestamp recent.
//!
//! A sender's sequence starts from its clock (nanoseconds since the Unix epoch) and grows by
//! one per datagram, so a sender that restarts, and forgot its last number, starts above it
//! and is accepted again without any state kept on disk.

use std::{collections::HashMap, time::Duration};

/// How many sequence numbers below the highest seen are still accepted (once each).
pub const WINDOW: u64 = 128;

/// Why a datagram that carried a valid MAC is still refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its timestamp is further from our clock than the freshness bound.
    Stale,
    /// Its sequence number was seen, or is too far below the highest seen to tell.
    Replayed,
}

/// The first sequence number of a sender started at `now_unix` (time since the epoch).
pub fn first_sequence(now_unix: Duration) -> u64 {
    u64::try_from(now_unix.as_nanos()).unwrap_or(u64::MAX / 2)
}

/// Per-sender windows and the freshness bound.
#[derive(Debug)]
pub struct ReplayGuard {
    max_age: Duration,
    senders: HashMap<u64, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    highest: u64,
    /// Bit i set: `highest - i` was seen (bit 0 is `highest` itself).
    seen: u128,
}

impl ReplayGuard {
    /// Datagrams whose timestamp is more than `max_age` away from the receiver's clock, in
    /// either direction, are stale.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            senders: HashMap::new(),
        }
    }

    /// Accepts (and remembers) or refuses one authenticated datagram. Call it only after the
    /// MAC verified, so that forged datagrams cannot move a window.
    pub fn check(
        &mut self,
        sender: u64,
        sequence: u64,
        timestamp_ms: u64,
        now_unix: Duration,
    ) -> Result<(), Refusal> {
        let now_ms = u64::try_from(now_unix.as_millis()).unwrap_or(u64::MAX);
        let max_age_ms = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        if now_ms.abs_diff(timestamp_ms) > max_age_ms {
            return Err(Refusal::Stale);
        }
        let Some(w) = self.senders.get_mut(&sender) else {
            self.senders.insert(
                sender,
                Window {
                    highest: sequence,
                    seen: 1,
                },
            );
            return Ok(());
        };
        if sequence > w.highest {
            let shift = sequence - w.highest;
            w.seen = if shift >= 128 { 0 } else { w.seen << shift } | 1;
            w.highest = sequence;
            return Ok(());
        }
        let back = w.highest - sequence;
        if back >= WINDOW {
            return Err(Refusal::Replayed);
        }
        let bit = 1u128 << back;
        if w.seen & bit != 0 {
            return Err(Refusal::Replayed);
        }
        w.seen |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_800_000_000);
    const AGE: Duration = Duration::from_secs(30);

    fn ts(now: Duration) -> u64 {
        now.as_millis() as u64
    }

    #[test]
    fn each_sequence_number_is_accepted_once() {
        let mut g = ReplayGuard::new(AGE);
        assert_eq!(g.check(1, 100, ts(NOW), NOW), Ok(()));
        assert_eq!(g.check(1, 100, ts(NOW), NOW), Err(Refusal::Replayed));
        assert_eq!(g.check(1, 101, ts(NOW), NOW), Ok(()));
        // Another sender's numbers are its own.
        assert_eq!(g.check(2, 100, ts(NOW), NOW), Ok(()));
    }

    #[test]
    fn reordered_datagrams_within_the_window_are_accepted_once() {
        let mut g = ReplayGuard::new(AGE);
        for seq in [1000, 1003, 1001, 1002] {
            assert_eq!(g.check(1, seq, ts(NOW), NOW), Ok(()), "{seq}");
        }
        for seq in [1000, 1001, 1002, 1003] {
            assert_eq!(
                g.check(1, seq, ts(NOW), NOW),
                Err(Refusal::Replayed),
                "{seq}"
            );
        }
        assert_eq!(g.check(1, 1003 + WINDOW, ts(NOW), NOW), Ok(()));
        // Now 1004 is WINDOW below the highest: too old to tell, so refused.
        assert_eq!(g.check(1, 1003, ts(NOW), NOW), Err(Refusal::Replayed));
        assert_eq!(g.check(1, 1004 + 1, ts(NOW), NOW), Ok(()));
    }

    #[test]
    fn timestamps_beyond_the_bound_are_stale_either_way() {
        let mut g = ReplayGuard::new(AGE);
        let old = ts(NOW - AGE - Duration::from_millis(1));
        let future = ts(NOW + AGE + Duration::from_millis(1));
        assert_eq!(g.check(1, 5, old, NOW), Err(Refusal::Stale));
        assert_eq!(g.check(1, 6, future, NOW), Err(Refusal::Stale));
        assert_eq!(g.check(1, 7, ts(NOW - AGE), NOW), Ok(()));
    }

    #[test]
    fn a_restarted_sender_is_accepted_again() {
        let mut g = ReplayGuard::new(AGE);
        let first = first_sequence(NOW);
        for i in 0..1000 {
            assert_eq!(g.check(1, first + i, ts(NOW), NOW), Ok(()));
        }
        // Restarted a second later: it starts from its clock, above what it sent before.
        let later = NOW + Duration::from_secs(1);
        let restarted = first_sequence(later);
        assert!(restarted > first + 1000);
        assert_eq!(g.check(1, restarted, ts(later), later), Ok(()));
    }
}
