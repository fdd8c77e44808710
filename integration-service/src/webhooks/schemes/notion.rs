//! Notion webhooks (developers.notion.com, "Webhooks"): creating a subscription, Notion POSTs
//! one unsigned request whose body carries `verification_token`; the person pastes that token
//! back into Notion's integration settings to verify the subscription. We store it (encrypted)
//! only while an Owner/Admin has armed the integration (`POST
//! /api/integrations/{id}/webhook/handshake`) and close the window; route 11 then shows it for
//! pasting. Outside the window: 403, nothing stored. Every event after that carries
//! `X-Notion-Signature: sha256=<hex HMAC-SHA256 of the raw body under the token>`; the event
//! type is the body's `type` (`page.created`...), the dedupe key its `id` (the same across
//! Notion's retries, which count up `attempt_number`).
//!
//! Invariant: a signed delivery is verified on the raw bytes before its body is parsed; an
//! unsigned one is only ever a verification request.

use serde_json::{json, Value};

use super::{Guide, Scheme, SecretSource};
use crate::context::AppContext;
use crate::webhooks::{
    receive::{
        accept_handshake, bad_request, field, json_text, store_one, unauthenticated,
        verify_with_integration_secrets, Answer, Answered, Delivery, Item,
    },
    signature::verify_hub_signature,
    WebhookRuntime,
};

/// Notion webhooks: the verification token in a handshake, then signed events.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Handshake,
    guide: Guide {
        events: &["page.created", "page.content_updated", "comment.created"],
        steps: &[
            "Open the handshake window: POST /api/integrations/{name}/webhook/handshake",
            "Within it, create the subscription (integration settings → Webhooks) with URL {url}",
            "Paste the verification token then shown here into Notion's Verify dialog",
        ],
        secret_field: Some("Verification token"),
        signature_header: Some("X-Notion-Signature"),
        content_type: Some("application/json"),
    },
    set_up_by_hand: true,
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let integration_id = delivery.url_integration()?;
    let Some(signature) = delivery.header("x-notion-signature").map(str::to_string) else {
        let token = verification_token(&delivery.body)
            .ok_or_else(|| unauthenticated("the X-Notion-Signature header is missing"))?;
        accept_handshake(ctx, runtime, &delivery, integration_id, &token).await?;
        return Ok(Answer::ok(json!({"success": true})));
    };
    verify_with_integration_secrets(
        ctx,
        runtime,
        &delivery,
        integration_id,
        "X-Notion-Signature",
        move |token, body| verify_hub_signature(token, body, &signature),
    )
    .await?;
    let payload = json_text(&delivery.body)?;
    let value: Value = serde_json::from_str(&payload)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    let id = field(&value, "/id", 200)
        .ok_or_else(|| bad_request("Invalid webhook body", "the id field is missing"))?;
    let event_type = field(&value, "/type", 100).unwrap_or_else(|| "event".into());
    let item = Item::new(event_type, id, payload);
    store_one(runtime, integration_id, &delivery, item).await
}

/// The `verification_token` of an unsigned verification request, if the body is one. The
/// body is unauthenticated: only that field is read, everything else skipped without building
/// a tree.
pub fn verification_token(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct VerificationRequest {
        #[serde(default)]
        verification_token: Option<String>,
    }
    serde_json::from_slice::<VerificationRequest>(body)
        .ok()?
        .verification_token
        .filter(|token| !token.is_empty() && token.len() <= 512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::signature::verify_hub_signature as verify;

    /// Notion's guide computes `sha256=` + hex HMAC-SHA256 of the body under the
    /// verification token ("Validating event payloads"); it publishes no vector. Token and
    /// event are the guide's examples; the digest was computed independently with
    /// `openssl dgst -sha256 -hmac "$TOKEN"`.
    #[test]
    fn known_answer() {
        let token = b"secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl";
        let body = br#"{"id":"367cba44-b6f3-4c92-81e7-6a2e9659efd4","timestamp":"2024-12-05T23:55:34.285Z","workspace_id":"13950b26-c203-4f3b-b97d-93ec06319565","subscription_id":"29d75c0d-5546-4414-8459-7b7a92f1fc4b","integration_id":"0ef2e755-4912-8096-91c1-00376a88a5ca","type":"page.created","entity":{"id":"153104cd-477e-809d-8dc4-ff2d96ae3090","type":"page"},"attempt_number":1}"#;
        let header = "sha256=0c971e5bb27b6bdf148194b89693807657063fab39e900160caf10cd3cbc6da5";
        assert!(verify(token, body, header));
        assert!(!verify(b"secret_other", body, header));
        assert!(!verify(token, b"{}", header));
        assert!(!verify(token, body, header.trim_start_matches("sha256=")));
    }

    #[test]
    fn verification_requests_are_recognised() {
        assert_eq!(
            verification_token(
                br#"{"verification_token":"secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl"}"#
            )
            .as_deref(),
            Some("secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl")
        );
        assert_eq!(verification_token(br#"{"type":"page.created"}"#), None);
        assert_eq!(verification_token(b"nope"), None);
        assert_eq!(verification_token(br#"{"verification_token":""}"#), None);
        assert_eq!(verification_token(br#"[0,0,0]"#), None);
        assert_eq!(
            verification_token(br#"{"big":[0,0,0],"verification_token":"t"}"#).as_deref(),
            Some("t")
        );
    }
}
