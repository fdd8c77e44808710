//! GitLab project and group webhooks: `X-Gitlab-Token` must equal the integration's generated
//! webhook secret (GitLab sends the token as is, it signs nothing), compared in constant time;
//! the event is `X-Gitlab-Event`; the dedupe key is `Idempotency-Key` (the same across
//! GitLab's retries of one delivery), else `X-Gitlab-Event-UUID`.
//!
//! Invariant: the token is checked before the body is read; nothing is stored on a failure.

use super::{Guide, Headers, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{store_json, verified_integration, Answered, Delivery},
    signature::token_matches,
    WebhookRuntime,
};

/// GitLab project and group webhooks.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &["Push events", "Merge request events", "Issues events"],
        steps: &[
            "Project (or group) → Settings → Webhooks → Add new webhook",
            "URL: {url}; Secret token: the secret shown here",
        ],
        secret_field: Some("Secret token"),
        signature_header: Some("X-Gitlab-Token"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        stored: &[
            "x-gitlab-event",
            "x-gitlab-event-uuid",
            "x-gitlab-webhook-uuid",
            "x-gitlab-instance",
            "idempotency-key",
        ],
        signature: Some("x-gitlab-token"),
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let token = delivery.credential("x-gitlab-token", "X-Gitlab-Token")?;
    let event_type = delivery.required("x-gitlab-event", "X-Gitlab-Event", 100)?;
    let delivery_id = match delivery.header("idempotency-key") {
        Some(_) => delivery.required("idempotency-key", "Idempotency-Key", 200)?,
        None => delivery.required("x-gitlab-event-uuid", "X-Gitlab-Event-UUID", 200)?,
    };
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "X-Gitlab-Token",
        move |secret, _body| token_matches(secret, &token),
    )
    .await?;
    store_json(runtime, integration_id, &delivery, event_type, delivery_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitLab's documentation ("Webhooks", custom headers and secret token): the token is sent
    /// verbatim in `X-Gitlab-Token`; the example delivery carries
    /// `X-Gitlab-Event: Push Hook` and `X-Gitlab-Event-UUID: 13792a34-cac6-4fda-95a8-c58e00a3954e`.
    /// https://docs.gitlab.com/user/project/integrations/webhooks/
    #[test]
    fn token_is_compared_whole() {
        let secret = b"f1a5a0a7d3f0c4b2e8d9";
        assert!(token_matches(secret, "f1a5a0a7d3f0c4b2e8d9"));
        assert!(!token_matches(secret, "f1a5a0a7d3f0c4b2e8d"));
        assert!(!token_matches(secret, "f1a5a0a7d3f0c4b2e8d9x"));
        assert!(!token_matches(secret, "F1A5A0A7D3F0C4B2E8D9"));
        assert!(!token_matches(secret, ""));
    }
}
