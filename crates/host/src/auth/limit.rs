//! Rate limits per credential: a token bucket (GCRA, `governor`) per API key or token
//! subject; past it a request is answered 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;

use super::{Error, Result};

/// Checks between two purges of the buckets that are full again (which are the same
/// as no bucket): the limiter's memory stays bounded by the credentials seen lately.
const PURGE_EVERY: u64 = 4096;

/// `--rate-limit` and `--rate-burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Requests per second each credential may make, sustained.
    pub per_second: f64,
    /// Requests a credential may make at once after being idle.
    pub burst: u32,
}

/// A token bucket per credential.
pub struct RateLimit {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("credentials", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// Buckets of `settings.burst` requests, refilled at `settings.per_second`.
    pub fn new(settings: RateSettings) -> Result<Self> {
        let RateSettings { per_second, burst } = settings;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(Error::Settings {
                flag: "--rate-limit",
                why: format!("{per_second} is not a rate: give requests per second above 0"),
            });
        }
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .ok()
            .and_then(governor::Quota::with_period)
            .ok_or_else(|| Error::Settings {
                flag: "--rate-limit",
                why: format!("{per_second} requests per second is out of range"),
            })?;
        let burst = NonZeroU32::new(burst).ok_or_else(|| Error::Settings {
            flag: "--rate-burst",
            why: "the burst is at least 1 request".into(),
        })?;
        Ok(Self {
            limiter: governor::RateLimiter::keyed(period.allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// Takes one request from `credential`'s bucket; `Err(wait)` when it is empty, with
    /// how long until it holds one again.
    pub fn check(&self, credential: &str) -> std::result::Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&credential.to_owned())
            .map_err(|not_until| {
                not_until.wait_time_from(governor::clock::DefaultClock::default().now())
            })
    }

    /// Credentials with a bucket in memory.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_bucket_waits_per_credential() {
        let limit = RateLimit::new(RateSettings {
            per_second: 1.0 / 3600.0,
            burst: 3,
        })
        .unwrap();
        for _ in 0..3 {
            assert_eq!(limit.check("a"), Ok(()));
        }
        let wait = limit.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        // Another credential has a bucket of its own.
        assert_eq!(limit.check("b"), Ok(()));
        assert_eq!(limit.tracked(), 2);
    }

    #[test]
    fn settings_are_checked() {
        for (per_second, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (1e-30, 1), (1.0, 0)] {
            assert!(
                RateLimit::new(RateSettings { per_second, burst }).is_err(),
                "{per_second} {burst}"
            );
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(10)), 1);
        assert_eq!(retry_after(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after(Duration::from_secs(7)), 7);
    }
}
