//! A token bucket bounding records sent per second, so a dump or a refresh of a large
//! table cannot flood the peers or the link. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Tokens are records; the bucket holds at most one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// At most `per_second` records per second on average, in bursts of at most
    /// `per_second` (a full bucket at `now`).
    pub fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            capacity: rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` tokens at `now`: returns how long to wait before sending them (zero when
    /// they are there). The tokens are owed either way, so the caller sends after the wait.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_one_second_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, t0);
        assert_eq!(b.take(1000, t0), Duration::ZERO);
        // 100 more are owed: a tenth of a second.
        let wait = b.take(100, t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // After waiting that long, the debt is paid and 500 ms buy 500 records.
        let t1 = t0 + wait + Duration::from_millis(500);
        assert_eq!(b.take(500, t1), Duration::ZERO);
        assert!(b.take(1, t1) > Duration::ZERO);
    }

    #[test]
    fn idle_time_does_not_grow_the_bucket_past_one_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(100, later), Duration::ZERO);
        assert!(b.take(1, later) > Duration::ZERO);
    }
}
