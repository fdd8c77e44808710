//! Per-integration budgets for verified deliveries: a token bucket of deliveries and one of
//! bytes, so one tenant (whose admins hold a valid webhook secret) cannot flood the store or
//! starve the others. Over budget the delivery is answered 429 with `Retry-After` and nothing
//! is stored; the provider retries later.
//!
//! Invariants: checked after the signature (only genuine deliveries spend a tenant's budget,
//! so forged traffic cannot lock a tenant out) and before the row is queued. Budgets are held
//! per service replica, in memory. The defaults are far above what a busy GitHub organization
//! sends (see README).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use uuid::Uuid;

pub use crate::config::quota::{replay_limits, QuotaLimits};

struct Buckets {
    deliveries: f64,
    bytes: f64,
    at: Instant,
}

/// The budgets of every integration that received a delivery on this replica.
pub struct TenantQuotas {
    limits: QuotaLimits,
    buckets: Mutex<HashMap<Uuid, Buckets>>,
}

impl TenantQuotas {
    pub fn new(limits: QuotaLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one delivery of `bytes` from `integration`'s budget, or answers how long until
    /// it could be spent.
    pub fn spend(&self, integration: Uuid, bytes: usize, now: Instant) -> Result<(), Duration> {
        let limits = self.limits;
        // A body larger than the whole burst could never pass: it costs the full burst.
        let cost = (bytes as f64).min(limits.bytes_burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(integration).or_insert(Buckets {
            deliveries: limits.deliveries_burst,
            bytes: limits.bytes_burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        bucket.deliveries =
            (bucket.deliveries + elapsed * limits.deliveries_per_sec).min(limits.deliveries_burst);
        bucket.bytes = (bucket.bytes + elapsed * limits.bytes_per_sec).min(limits.bytes_burst);
        if bucket.deliveries >= 1.0 && bucket.bytes >= cost {
            bucket.deliveries -= 1.0;
            bucket.bytes -= cost;
            return Ok(());
        }
        let wait_deliveries = (1.0 - bucket.deliveries).max(0.0) / limits.deliveries_per_sec;
        let wait_bytes = (cost - bucket.bytes).max(0.0) / limits.bytes_per_sec;
        let wait = wait_deliveries.max(wait_bytes);
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(3600)))
    }
}

impl Default for TenantQuotas {
    fn default() -> Self {
        Self::new(QuotaLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> TenantQuotas {
        TenantQuotas::new(QuotaLimits {
            deliveries_per_sec: 2.0,
            deliveries_burst: 3.0,
            bytes_per_sec: 100.0,
            bytes_burst: 1000.0,
        })
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let quotas = small();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        for _ in 0..3 {
            quotas.spend(a, 10, now).unwrap();
        }
        let wait = quotas.spend(a, 10, now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another tenant is not affected.
        quotas.spend(b, 10, now).unwrap();
        quotas
            .spend(a, 10, now + Duration::from_millis(500))
            .unwrap();
    }

    #[test]
    fn bytes_are_budgeted_too() {
        let quotas = small();
        let a = Uuid::new_v4();
        let now = Instant::now();
        quotas.spend(a, 900, now).unwrap();
        let wait = quotas.spend(a, 300, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        // Larger than the burst: costs the whole burst, possible once full again.
        let later = now + Duration::from_secs(60);
        quotas.spend(a, 1_000_000, later).unwrap();
        assert!(quotas.spend(a, 1, later).is_err());
    }
}
