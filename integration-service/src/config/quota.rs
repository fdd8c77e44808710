//! The per-integration budgets' values (`WEBHOOK_TENANT_*`, `WEBHOOK_REPLAY_*`): configuration
//! owns them; `webhooks::quota` spends them.

use super::{
    env::{invalid, Env},
    ConfigError,
};

/// Sustained rates and bursts of one integration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaLimits {
    /// `WEBHOOK_TENANT_DELIVERIES_PER_SEC` (50).
    pub deliveries_per_sec: f64,
    /// `WEBHOOK_TENANT_DELIVERIES_BURST` (500).
    pub deliveries_burst: f64,
    /// `WEBHOOK_TENANT_BYTES_PER_SEC` (10 MiB).
    pub bytes_per_sec: f64,
    /// `WEBHOOK_TENANT_BYTES_BURST` (256 MiB; at least one largest body).
    pub bytes_burst: f64,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            deliveries_per_sec: 50.0,
            deliveries_burst: 500.0,
            bytes_per_sec: 10.0 * 1024.0 * 1024.0,
            bytes_burst: 256.0 * 1024.0 * 1024.0,
        }
    }
}

/// The replay budget of one integration (`WEBHOOK_REPLAY_BURST`, 500 at once: an operator
/// replaying a backlog of dead letters; then `WEBHOOK_REPLAYS_PER_SEC`, 10 a second).
pub fn replay_limits(burst: u64, per_sec: u64) -> QuotaLimits {
    QuotaLimits {
        deliveries_per_sec: per_sec as f64,
        deliveries_burst: burst as f64,
        bytes_per_sec: f64::MAX,
        bytes_burst: f64::MAX,
    }
}

/// `WEBHOOK_TENANT_DELIVERIES_PER_SEC`, `_DELIVERIES_BURST`, `_BYTES_PER_SEC`, `_BYTES_BURST`.
pub(super) fn webhook_quota(env: &Env) -> Result<QuotaLimits, ConfigError> {
    let defaults = QuotaLimits::default();
    let positive = |name: &str, default: f64| -> Result<f64, ConfigError> {
        match env.number(name, default as u64)? {
            0 => Err(invalid(name, "expected at least 1")),
            n => Ok(n as f64),
        }
    };
    let limits = QuotaLimits {
        deliveries_per_sec: positive(
            "WEBHOOK_TENANT_DELIVERIES_PER_SEC",
            defaults.deliveries_per_sec,
        )?,
        deliveries_burst: positive("WEBHOOK_TENANT_DELIVERIES_BURST", defaults.deliveries_burst)?,
        bytes_per_sec: positive("WEBHOOK_TENANT_BYTES_PER_SEC", defaults.bytes_per_sec)?,
        bytes_burst: positive("WEBHOOK_TENANT_BYTES_BURST", defaults.bytes_burst)?,
    };
    Ok(limits)
}
