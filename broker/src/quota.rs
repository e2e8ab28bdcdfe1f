//! The per-session quota of usage records an agent may write: a token bucket per session,
//! [`BURST`] records at once, refilled at [`PER_MINUTE`] a minute. A compromised sandbox (or
//! a stolen session certificate) can therefore not grow the audit trail without bound; the
//! agent coalesces repeated uses into one record with a count, so an honest session stays far
//! below it. The buckets live in this broker's memory: with several brokers on one database
//! each keeps its own (an agent talks to one at a time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Records a session may write at once.
pub const BURST: u64 = 100_000;
/// Records a session may write per minute, sustained.
pub const PER_MINUTE: u64 = 30_000;
/// Buckets kept at most; past this, full buckets are forgotten (a forgotten bucket is full).
const MAX_BUCKETS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every session.
#[derive(Debug, Default)]
pub struct UsageQuota {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A refusal: how long until the batch would fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReached {
    pub retry_after_secs: u64,
}

fn refill(bucket: &mut Bucket, now: Instant) {
    let rate = PER_MINUTE as f64 / 60.0;
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(BURST as f64);
    bucket.at = now;
}

impl UsageQuota {
    /// Takes `count` records from `session`'s bucket, or refuses the whole batch (taking
    /// nothing) when they do not fit.
    pub fn take(&self, session: &str, count: u64) -> Result<(), QuotaReached> {
        self.take_at(session, count, Instant::now())
    }

    fn take_at(&self, session: &str, count: u64, now: Instant) -> Result<(), QuotaReached> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(session) {
            buckets.retain(|_, b| {
                refill(b, now);
                b.tokens < BURST as f64
            });
        }
        let bucket =
            buckets.entry(session.to_owned()).or_insert(Bucket { tokens: BURST as f64, at: now });
        refill(bucket, now);
        let wanted = count as f64;
        if wanted <= bucket.tokens {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let missing = wanted.min(BURST as f64) - bucket.tokens;
        let secs = (missing * 60.0 / PER_MINUTE as f64).ceil().max(1.0);
        Err(QuotaReached { retry_after_secs: secs as u64 })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_session_gets_its_burst_then_its_rate() {
        let q = UsageQuota::default();
        let t0 = Instant::now();
        q.take_at("s", BURST - 10, t0).unwrap();
        q.take_at("s", 10, t0).unwrap();
        let refused = q.take_at("s", 100, t0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 1);
        // Another session has its own bucket.
        q.take_at("other", 1000, t0).unwrap();
        // A minute later, one minute's worth fits, and no more.
        let later = t0 + Duration::from_secs(60);
        q.take_at("s", PER_MINUTE, later).unwrap();
        assert!(q.take_at("s", 1, later).is_err());
    }
}
