//! Jira / Atlassian admin webhooks registered with a secret: `X-Hub-Signature: sha256=<hex
//! HMAC-SHA256(secret, raw body)>` under the integration's generated secret; the dedupe key is
//! `X-Atlassian-Webhook-Identifier` (the same across Atlassian's retries); the event is the
//! body's `webhookEvent`, read once the signature has matched.
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use serde_json::Value;

use super::{Guide, Headers, Scheme, SecretSource};
use crate::webhooks::{
    receive::{bad_request, field, hub_signed_integration, store_one, Answered, Delivery, Item},
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult};

/// Jira / Atlassian admin webhooks registered with a secret.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &[
            "jira:issue_created",
            "jira:issue_updated",
            "comment_created",
        ],
        steps: &[
            "Jira settings → System → WebHooks → Create a WebHook",
            "URL: {url}; Secret: the secret shown here",
        ],
        secret_field: Some("Secret"),
        signature_header: Some("X-Hub-Signature"),
        content_type: Some("application/json"),
    },
    headers: Headers {
        stored: &[
            "x-atlassian-webhook-identifier",
            "x-atlassian-webhook-retry",
        ],
        signature: Some("x-hub-signature"),
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let signature = delivery.credential("x-hub-signature", "X-Hub-Signature")?;
    let delivery_id = delivery.required(
        "x-atlassian-webhook-identifier",
        "X-Atlassian-Webhook-Identifier",
        200,
    )?;
    let integration_id =
        hub_signed_integration(ctx, runtime, &delivery, signature, "X-Hub-Signature").await?;
    let (event_type, payload) = jira_event(&delivery.body)?;
    let item = Item::new(event_type, delivery_id, payload);
    store_one(runtime, integration_id, &delivery, item).await
}

/// The event type (`webhookEvent`, e.g. `jira:issue_created`) and the JSON text of a body.
pub fn jira_event(body: &[u8]) -> ServiceResult<(String, String)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    let event_type = field(&value, "/webhookEvent", 100)
        .ok_or_else(|| bad_request("Invalid webhook body", "the webhookEvent field is missing"))?;
    // Stored as sent; it was just parsed, so it is UTF-8.
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?;
    Ok((event_type, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload shape of Atlassian's documentation example ("Webhooks", example callback):
    /// https://developer.atlassian.com/cloud/jira/platform/webhooks/
    #[test]
    fn event_type_from_the_body() {
        let body = br#"{"timestamp":1525698237764,"webhookEvent":"jira:issue_created","issue":{"id":"99291","key":"JRA-20002"}}"#;
        let (event_type, payload) = jira_event(body).unwrap();
        assert_eq!(event_type, "jira:issue_created");
        assert!(payload.contains("JRA-20002"));
        assert!(jira_event(br#"{"issue":{}}"#).is_err());
        assert!(jira_event(b"not json").is_err());
    }
}
