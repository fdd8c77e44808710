//! The series of provider webhook subscriptions (route 15): how many by provider and state,
//! renewals and repairs by outcome, and the soonest expiry of an ACTIVE one — what the
//! alert "subscriptions about to lapse" reads.

use metrics::Label;

use super::Metrics;

/// What became of one renewal or repair (`webhook_subscription_renewals_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// Renewed (or re-created) at the provider.
    Renewed,
    /// Refused or unreachable; tried again after a backoff.
    Retried,
    /// Out of attempts: the subscription is FAILED.
    Failed,
    /// A webhook missing at the provider was created again.
    Repaired,
}

impl RenewalOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::Repaired => "repaired",
        }
    }
}

impl Metrics {
    /// The series alerts read, present before the first subscription: no expiry yet
    /// (+Inf), no refused renewal yet (0).
    pub(super) fn describe_subscriptions(&self) {
        self.gauge(
            "webhook_subscription_soonest_expiry_seconds",
            Vec::new(),
            f64::INFINITY,
        );
        for outcome in [RenewalOutcome::Retried, RenewalOutcome::Failed] {
            self.counter(
                "webhook_subscription_renewals_total",
                vec![Label::new("outcome", outcome.as_str())],
                0,
            );
        }
    }

    /// One renewal or repair of a subscription of `provider` (a catalog name).
    pub fn subscription_renewal(&self, provider: &str, outcome: RenewalOutcome) {
        self.counter(
            "webhook_subscription_renewals_total",
            vec![
                Label::new("provider", provider.to_string()),
                Label::new("outcome", outcome.as_str()),
            ],
            1,
        );
    }

    /// The subscriptions by (provider, state), and seconds to the soonest expiry of an
    /// ACTIVE one (negative when already past).
    pub fn subscription_census(
        &self,
        by_state: &[(String, &'static str, u64)],
        soonest: Option<f64>,
    ) {
        for (provider, state, count) in by_state {
            self.gauge(
                "webhook_subscriptions",
                vec![
                    Label::new("provider", provider.clone()),
                    Label::new("state", *state),
                ],
                *count as f64,
            );
        }
        if let Some(seconds) = soonest {
            self.gauge(
                "webhook_subscription_soonest_expiry_seconds",
                Vec::new(),
                seconds,
            );
        }
    }
}
