//! Bitbucket Cloud repository webhooks with a secret: `X-Hub-Signature: sha256=<hex
//! HMAC-SHA256(secret, raw body)>` (the WebSub construction GitHub uses too) under the
//! integration's generated secret; the event is `X-Event-Key`; the dedupe key is
//! `X-Request-UUID`.
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use super::{Guide, Headers, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{hub_signed_integration, store_json, Answered, Delivery},
    WebhookRuntime,
};

/// Bitbucket Cloud repository webhooks with a secret.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &["repo:push", "pullrequest:created", "issue:created"],
        steps: &[
            "Repository settings → Webhooks → Add webhook",
            "URL: {url}; Secret: the secret shown here",
        ],
        secret_field: Some("Secret"),
        signature_header: Some("X-Hub-Signature"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        stored: &["x-event-key", "x-request-uuid", "x-hook-uuid"],
        signature: Some("x-hub-signature"),
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let signature = delivery.credential("x-hub-signature", "X-Hub-Signature")?;
    let event_type = delivery.required("x-event-key", "X-Event-Key", 100)?;
    let delivery_id = delivery.required("x-request-uuid", "X-Request-UUID", 200)?;
    let integration_id =
        hub_signed_integration(ctx, runtime, &delivery, signature, "X-Hub-Signature").await?;
    store_json(runtime, integration_id, &delivery, event_type, delivery_id).await
}

#[cfg(test)]
mod tests {
    use crate::webhooks::signature::verify_hub_signature;

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
