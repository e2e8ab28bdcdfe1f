//! Capped exponential backoff with jitter, for reconnecting to the broker: many sandboxes that
//! lost the broker at once must not come back in lockstep.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that double from `initial` up to `cap`, each drawn at random from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Backoff { initial, cap, current: initial }
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.cap);
        // Half fixed, half random: never shorter than base/2, never longer than base.
        let half = base / 2;
        half + half.mul_f64(random_unit())
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A number in [0, 1). std's `RandomState` is seeded from the OS per process and per use, which
/// is all the randomness jitter needs.
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in delays.iter().zip(bases) {
            assert!(*d >= Duration::from_millis(base / 2), "{d:?} < {base}/2");
            assert!(*d <= Duration::from_millis(base), "{d:?} > {base}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_varies() {
        let draws: std::collections::BTreeSet<u64> =
            (0..20).map(|_| (random_unit() * 1e9) as u64).collect();
        assert!(draws.len() > 10);
    }
}
