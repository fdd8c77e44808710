//! Admission before the body: what a delivery's headers alone can tell, asked by the gateway
//! before it reads a byte of a body declared over 64 KiB or of unknown length, so that large
//! unauthenticated bodies to unknown or disconnected integrations are never read, buffered or
//! forwarded (a smaller body is read at once: asking would cost more than reading it).
//!
//! Invariant: every refusal here is one `receive` would also give for the same headers (same
//! status); admission never accepts what `receive` would refuse for its headers, and it
//! writes nothing. What each scheme requires is its own (`schemes::Scheme::headers`).

use chrono::Utc;
use uuid::Uuid;

use super::{
    receive::{bad_request, load_secrets, unauthenticated},
    schemes::{self, Scheme},
    signature::timestamp_is_fresh,
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{ServiceError, ServiceResult},
    metrics::DeliveryOutcome,
};

/// An admitted delivery: what the gateway needs before it reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The scheme's body limit when smaller than the gateway's (`Scheme::body_limit`).
    pub body_limit: Option<usize>,
}

/// Admits a delivery for `provider` by its headers (names lower case), or answers why not.
/// A refusal is counted as the delivery's outcome (it never reaches `intake`, which counts
/// every admitted one).
pub async fn admit(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    provider: &str,
    integration_id: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
) -> ServiceResult<Admitted> {
    let scheme = ctx.catalog.get(provider).and_then(schemes::of_provider);
    let result = check(ctx, runtime, scheme, provider, integration_id, header).await;
    if let Err(err) = &result {
        let label = ctx
            .catalog
            .get(provider)
            .map_or("unknown", |p| p.name.as_str());
        ctx.metrics
            .webhook_delivery(label, DeliveryOutcome::of_error(err));
    }
    result
}

async fn check(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    scheme: Option<&'static Scheme>,
    provider: &str,
    integration_id: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
) -> ServiceResult<Admitted> {
    let Some(scheme) = scheme else {
        return Err(ServiceError::not_found("Unknown webhook provider")
            .with_details(format!("{provider:?} receives no webhooks")));
    };
    let headers = &scheme.headers;
    if let Some(name) = headers.signature {
        if header(name).is_none() {
            return Err(unauthenticated(&format!("the {name} header is missing")));
        }
    }
    for name in headers.required {
        if header(name).is_none() {
            // A signed timestamp missing is a missing credential, as `receive` says.
            return match headers.timestamp == Some(*name) {
                true => Err(unauthenticated(&format!("the {name} header is missing"))),
                false => Err(bad_request(
                    "Missing delivery headers",
                    format!("the {name} header is missing"),
                )),
            };
        }
    }
    if let Some(name) = headers.timestamp {
        let fresh = header(name)
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| timestamp_is_fresh(t, Utc::now().timestamp()));
        if !fresh {
            return Err(unauthenticated(&format!(
                "{name} is more than 5 minutes away: replayed or clock skew"
            )));
        }
    }
    let admitted = Admitted {
        body_limit: scheme.body_limit,
    };
    // No integration id: the scheme's app-level URL, when it has one (the GitHub App's,
    // verified with GITHUB_APP_WEBHOOK_SECRET and routed by installation).
    if let (None, Some(app_level)) = (integration_id, scheme.checks.app_level) {
        return app_level(ctx).map(|_| admitted);
    }
    if scheme.per_integration() {
        let Some(id) = integration_id else {
            return Err(bad_request(
                "Missing integration id",
                format!("deliver to /api/integrations/{provider}/webhook/<integration id>"),
            ));
        };
        let id = Uuid::parse_str(id.trim())
            .map_err(|_| bad_request("Invalid integration id", "expected a UUID"))?;
        // Exists for this provider and holds a secret valid now (disconnecting clears it).
        let secrets = match runtime.secrets.get(id) {
            Some(cached) => cached,
            None => load_secrets(ctx, runtime, provider, id).await?,
        };
        // Connected, with a secret valid now (Microsoft's validation handshake included).
        if secrets.candidates(chrono::Utc::now()).is_empty() {
            return Err(ServiceError::not_found("Webhooks not configured")
                .with_details("the integration has no webhook secret: connect it first"));
        }
    }
    Ok(admitted)
}
