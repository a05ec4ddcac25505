//! Exponential backoff with jitter: one policy for every retry loop (S3
//! requests here, chunk attempts in the coordinator).

use std::time::Duration;

/// Waits between attempts: `initial · 2^(failures-1)`, capped at `max`, then
/// shortened by a random fraction of at most `jitter`, so many clients that
/// failed together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// The largest fraction (0 to 1) a wait is shortened by at random; 0
    /// gives exact waits.
    pub jitter: f64,
}

/// The jitter used unless configured otherwise: waits between 80 % and
/// 100 % of the exponential value.
pub const DEFAULT_JITTER: f64 = 0.2;

impl Backoff {
    /// Exact exponential waits from `initial` up to `max`, no jitter.
    #[must_use]
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: 0.0,
        }
    }

    /// The same waits with `jitter`, clamped to 0-1.
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The exponential wait after `failures` failures (1-based; 0 gives no
    /// wait), before jitter.
    #[must_use]
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The wait after `failures` failures: [`Backoff::ceiling`] shortened
    /// by a random fraction of at most `jitter`.
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        if self.jitter <= 0.0 {
            return ceiling;
        }
        ceiling.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_cap_and_jitter_only_shortens() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(700));
        let waits: Vec<_> = (0..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(waits, [0, 100, 200, 400, 700, 700]);
        assert_eq!(b.delay(200), Duration::from_millis(700));
        let j = b.with_jitter(0.5);
        for n in 1..=6 {
            for _ in 0..50 {
                let d = j.delay(n);
                assert!(d <= b.ceiling(n) && d >= b.ceiling(n) / 2, "{n}: {d:?}");
            }
        }
        assert_eq!(b.with_jitter(f64::NAN).jitter, 0.0);
        assert_eq!(b.with_jitter(7.0).jitter, 1.0);
    }
}
