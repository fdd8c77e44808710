//! Bitbucket Cloud repository webhooks with a secret: `X-Hub-Signature: sha256=<hex
//! HMAC-SHA256(secret, raw body)>` (the WebSub construction GitHub uses too) under the
//! integration's generated secret; the event is `X-Event-Key`; the dedupe key is
//! `X-Request-UUID`.
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use super::{Checks, Guide, Headers, Scheme, SecretSource};
use crate::webhooks::{
    receive::{json_text, store_one, verified_integration, Answer, Delivery, Item},
    signature::verify_hub_signature,
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult};

/// Bitbucket Cloud repository webhooks with a secret.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    headers: Headers {
        signature: Some("x-hub-signature"),
        required: &[],
        timestamp: None,
        stored: &["x-event-key", "x-request-uuid", "x-hook-uuid"],
    },
    body_limit: None,
    guide: Guide {
        secret_field: Some("Secret"),
        signature_header: Some("X-Hub-Signature"),
        content_type: Some("application/json"),
        events: &["repo:push", "pullrequest:created", "issue:created"],
        steps: &[
            "Repository settings → Webhooks → Add webhook",
            "URL: {url}; Secret: the secret shown here",
        ],
    },
    set_up_by_hand: false,
    checks: Checks::NONE,
    receive: |ctx, runtime, delivery| Box::pin(receive(ctx, runtime, delivery)),
};

async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let signature = delivery.credential("x-hub-signature", "X-Hub-Signature")?;
    let event_type = delivery.required("x-event-key", "X-Event-Key", 100)?;
    let delivery_id = delivery.required("x-request-uuid", "X-Request-UUID", 200)?;
    let integration_id = verified_integration(
        ctx,
        runtime,
        &delivery,
        "X-Hub-Signature",
        move |secret, body| verify_hub_signature(secret, body, &signature),
    )
    .await?;
    let payload = json_text(&delivery.body)?;
    let item = Item::new(event_type, delivery_id, payload);
    store_one(runtime, integration_id, &delivery, item).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitbucket signs as `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`
    /// (https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/, "Secure
    /// webhooks"). Atlassian publishes no vector; the construction is WebSub's, so GitHub's
    /// documented vector applies byte for byte:
    /// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    #[test]
    fn websub_sha256_known_answer() {
        let secret = b"It's a Secret to Everybody";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_hub_signature(secret, b"Hello, World!", header));
        assert!(!verify_hub_signature(secret, b"Hello, World?", header));
        assert!(!verify_hub_signature(b"other", b"Hello, World!", header));
        assert!(!verify_hub_signature(
            secret,
            b"Hello, World!",
            &header.replace("sha256=", "sha1=")
        ));
        assert!(!verify_hub_signature(secret, b"Hello, World!", ""));
    }
}
