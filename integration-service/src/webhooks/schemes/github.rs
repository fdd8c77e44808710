//! GitHub repository and organization webhooks: `X-Hub-Signature-256` (HMAC-SHA256 of the raw
//! body under the integration's webhook secret, or a previous one still in its grace period);
//! the URL names the integration; `X-GitHub-Delivery` is the dedupe key.
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed; a cached
//! secret that fails is re-read from the database before the delivery is refused.

use super::{
    github_app,
    github_delivery::{github_payload, store},
    Checks, Guide, Headers, Scheme, SecretSource,
};
use crate::webhooks::{
    receive::{
        bad_request, off_executor, unauthenticated, verified_integration, Answer, Answered,
        Delivery,
    },
    signature::verify_hub_signature,
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult};

/// At admission, a delivery naming no integration: the App's URL takes it only when
/// `GITHUB_APP_WEBHOOK_SECRET` is set.
fn app_level(ctx: &AppContext) -> ServiceResult<()> {
    github_app::app_secret(ctx).map(|_| ())
}

/// GitHub repository and organization webhooks (and the App's app-level URL).
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &["push", "pull_request", "issues"],
        steps: &[
            "Repository (or organization) → Settings → Webhooks → Add webhook",
            "Payload URL: {url}; Content type: application/json; Secret: the secret shown here",
            "A GitHub App instead: its webhook URL is /api/integrations/github/webhook with GITHUB_APP_WEBHOOK_SECRET, routed by installation",
        ],
        secret_field: Some("Secret"),
        signature_header: Some("X-Hub-Signature-256"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        stored: &[
            "x-github-event",
            "x-github-delivery",
            "x-github-hook-id",
            "x-github-hook-installation-target-id",
            "x-github-hook-installation-target-type",
        ],
        signature: Some("x-hub-signature-256"),
        required: &["x-github-event", "x-github-delivery"],
        ..Headers::NONE
    },
    checks: Checks {
        app_level: Some(app_level),
        ..Checks::NONE
    },
    ..Scheme::new(|ctx, runtime, delivery| {
        match delivery.integration_id {
            // No integration in the URL: the GitHub App's app-level delivery.
            None => Box::pin(github_app::receive(ctx, runtime, delivery)),
            Some(_) => Box::pin(receive(ctx, runtime, delivery)),
        }
    })
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let signature = delivery
        .header("x-hub-signature-256")
        .ok_or_else(|| unauthenticated("the X-Hub-Signature-256 header is missing"))?
        .to_string();
    let event_type = delivery
        .header("x-github-event")
        .ok_or_else(|| bad_request("Missing event type", "the X-GitHub-Event header is missing"))?
        .to_string();
    let delivery_id = delivery
        .header("x-github-delivery")
        .ok_or_else(|| {
            bad_request(
                "Missing delivery id",
                "the X-GitHub-Delivery header is missing",
            )
        })?
        .to_string();
    if event_type.len() > 100 || delivery_id.len() > 200 {
        return Err(bad_request(
            "Invalid delivery headers",
            "X-GitHub-Event or X-GitHub-Delivery is too long",
        ));
    }
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "the signature",
        move |secret, body| verify_hub_signature(secret, body, &signature),
    )
    .await?;
    let media_type = delivery.media_type();
    let headers = delivery.stored_headers();
    let body = delivery.body;
    let payload = off_executor(body.len(), move || {
        github_payload(media_type.as_deref(), &body)
    })
    .await??;

    let event_id = store(
        runtime,
        integration_id,
        &event_type,
        delivery_id,
        payload,
        &headers,
    );
    Ok(Answer::stored(event_id.await?))
}
