//! Admission before the body: what a delivery's headers alone can tell, asked by the gateway
//! before it reads a byte of a body declared over 64 KiB or of unknown length, so that large
//! unauthenticated bodies to unknown or disconnected integrations are never read, buffered or
//! forwarded (a smaller body is read at once: asking would cost more than reading it).
//!
//! Invariant: every refusal here is one `receive` would also give for the same headers (same
//! status); admission never accepts what `receive` would refuse for its headers, and it
//! writes nothing. The per-scheme header requirements live on `catalog::WebhookScheme`.

use chrono::Utc;
use uuid::Uuid;

use super::{
    receive::{bad_request, load_secrets, unauthenticated},
    signature::timestamp_is_fresh,
    WebhookRuntime,
};
use crate::{
    catalog::WebhookScheme,
    context::AppContext,
    error::{ServiceError, ServiceResult},
    metrics::DeliveryOutcome,
};

/// An admitted delivery: what the gateway needs before it reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The scheme's body limit when smaller than the gateway's (`WebhookScheme::body_limit`).
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
    let result = check(ctx, runtime, provider, integration_id, header).await;
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
    provider: &str,
    integration_id: Option<&str>,
    header: impl Fn(&str) -> Option<String>,
) -> ServiceResult<Admitted> {
    let scheme = ctx
        .catalog
        .get(provider)
        .map(|p| p.webhook)
        .unwrap_or_default();
    if scheme == WebhookScheme::None {
        return Err(ServiceError::not_found("Unknown webhook provider")
            .with_details(format!("{provider:?} receives no webhooks")));
    }
    if let Some(name) = scheme.signature_header() {
        if header(name).is_none() {
            return Err(unauthenticated(&format!("the {name} header is missing")));
        }
    }
    for name in scheme.required_headers() {
        if header(name).is_none() {
            return match (scheme, *name) {
                // A signed timestamp missing is a missing credential, as `receive` says.
                (scheme, name) if scheme.timestamp_header() == Some(name) => {
                    Err(unauthenticated(&format!("the {name} header is missing")))
                }
                _ => Err(bad_request(
                    "Missing delivery headers",
                    format!("the {name} header is missing"),
                )),
            };
        }
    }
    if let Some(name) = scheme.timestamp_header() {
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
        body_limit: scheme.body_limit(),
    };
    // GitHub without an integration id: the App's app-level delivery, verified with
    // GITHUB_APP_WEBHOOK_SECRET and routed by installation (refused when it is not set).
    if scheme == WebhookScheme::GithubHmacSha256 && integration_id.is_none() {
        return super::schemes::github_app::app_secret(ctx).map(|_| admitted);
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
