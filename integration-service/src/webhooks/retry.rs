//! Retries of events a consumer failed: exponential backoff with jitter, then the dead letter.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;

use crate::store::webhook_events::AfterError;

/// Attempts (deliveries to a consumer) before an event is dead.
pub const MAX_ATTEMPTS: i32 = 8;
/// Delay before the second attempt; doubled for each further one.
const BASE_DELAY_MS: i64 = 1_000;
/// Longest delay between attempts.
const MAX_DELAY_MS: i64 = 3_600_000;

/// Delay after failed attempt number `attempts` (1-based), before jitter.
pub fn backoff_ms(attempts: i32) -> i64 {
    let exponent = attempts.clamp(1, 31) - 1;
    BASE_DELAY_MS
        .saturating_mul(1_i64 << exponent)
        .min(MAX_DELAY_MS)
}

/// What follows failed attempt number `attempts`: a retry at `now + backoff ± 20 %` (so
/// consumers failing together do not come back together), or dead after `MAX_ATTEMPTS`.
pub fn after_error(attempts: i32, now: DateTime<Utc>) -> AfterError {
    if attempts >= MAX_ATTEMPTS {
        return AfterError::Dead;
    }
    let base = backoff_ms(attempts);
    let jitter = rand::thread_rng().gen_range(-(base / 5)..=(base / 5));
    AfterError::RetryAt(now + Duration::milliseconds(base + jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(0), 1_000);
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(3), 4_000);
        assert_eq!(backoff_ms(13), MAX_DELAY_MS);
        assert_eq!(backoff_ms(i32::MAX), MAX_DELAY_MS);
    }

    #[test]
    fn retries_carry_jitter_within_a_fifth_then_die() {
        let now = Utc::now();
        for attempts in 1..MAX_ATTEMPTS {
            let AfterError::RetryAt(at) = after_error(attempts, now) else {
                panic!("attempt {attempts} should be retried");
            };
            let delay = (at - now).num_milliseconds();
            let base = backoff_ms(attempts);
            assert!(
                (base - base / 5..=base + base / 5).contains(&delay),
                "{delay} vs {base}"
            );
        }
        assert_eq!(after_error(MAX_ATTEMPTS, now), AfterError::Dead);
    }
}
