//! GitHub App deliveries: one app-level URL (`/api/integrations/github/webhook`, no
//! integration id) signed with the App's webhook secret `GITHUB_APP_WEBHOOK_SECRET`
//! (`X-Hub-Signature-256`, as for repository hooks), routed by the payload's `installation.id`
//! to the one connected integration that recorded that installation at its OAuth callback (an
//! installation belongs to one organization: the unique index over connected accounts, as for
//! Slack workspaces). `X-GitHub-Delivery` is the dedupe key. An `installation` event with
//! action `deleted` is stored, then disconnects that integration (as Slack's `app_uninstalled`
//! does; a suspension is reversible and only stored).
//!
//! A genuine delivery no organization can take (an installation whose OAuth step never
//! completed or was disconnected, the App's `ping`, events without an installation) is
//! answered 202 with `stored: false` and leaves no row: GitHub's guidance is to answer every
//! delivery with a 2xx within 10 s, and it does not retry failures by itself (an admin can
//! redeliver from the App's "Advanced" page once the installation is connected).
//!
//! Invariant: the signature is checked on the raw bytes before the body is parsed.

use serde_json::{json, Value};

use crate::webhooks::{
    receive::{bad_request, off_executor, unauthenticated, Answer, Answered, Delivery},
    schemes::github_delivery::{self, github_payload},
    signature::verify_hub_signature,
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{ServiceError, ServiceResult},
    store,
};

/// The App's webhook secret, or why app-level GitHub deliveries cannot be received.
pub(in crate::webhooks) fn app_secret(ctx: &AppContext) -> ServiceResult<String> {
    ctx.config
        .provider_var("GITHUB_APP_WEBHOOK_SECRET")
        .map(|s| s.expose().to_string())
        .ok_or_else(not_configured)
}

pub(in crate::webhooks) async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> Answered {
    let secret = app_secret(ctx)?;
    let signature = delivery.credential("x-hub-signature-256", "X-Hub-Signature-256")?;
    let event_type = delivery.required("x-github-event", "X-GitHub-Event", 100)?;
    let delivery_id = delivery.required("x-github-delivery", "X-GitHub-Delivery", 200)?;
    let media_type = delivery.media_type();
    let headers = delivery.stored_headers();
    let body = delivery.body.clone();
    let (verified, payload) = off_executor(body.len(), move || {
        if !verify_hub_signature(secret.as_bytes(), &body, &signature) {
            return (false, Err(unauthenticated("no match")));
        }
        (true, github_payload(media_type.as_deref(), &body))
    })
    .await?;
    if !verified {
        return Err(unauthenticated(
            "the signature does not match GITHUB_APP_WEBHOOK_SECRET",
        ));
    }
    let payload = payload?;
    let value: Value = serde_json::from_str(&payload)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    let Some(installation) = installation_id(&value) else {
        return Ok(not_stored(format!(
            "a {event_type} delivery names no installation"
        )));
    };
    let Some(record) =
        store::integrations::find_connected_by_account(&ctx.db, "github", &installation).await?
    else {
        return Ok(not_stored(format!(
            "no organization has connected GitHub App installation {installation}"
        )));
    };
    let uninstalled = event_type == "installation"
        && value.get("action").and_then(Value::as_str) == Some("deleted");
    let event_id = github_delivery::store(
        runtime,
        record.id,
        &event_type,
        delivery_id,
        payload,
        &headers,
    );
    let event_id = event_id.await?;
    // The installation is gone: its organization's integration no longer receives anything,
    // and the installation may be connected again (by any organization) when reinstalled.
    if uninstalled {
        store::integrations::disconnect(&ctx.db, record.id).await?;
        tracing::info!(integration = %record.id, "GitHub App installation removed: integration disconnected");
    }
    Ok(Answer::stored(event_id))
}

/// `installation.id` of a verified payload, as text.
pub fn installation_id(payload: &Value) -> Option<String> {
    payload
        .pointer("/installation/id")
        .and_then(Value::as_u64)
        .map(|id| id.to_string())
}

/// 202: verified, but no organization takes it; nothing stored.
fn not_stored(details: String) -> Answer {
    Answer {
        http_status: 202,
        ..Answer::ok(json!({"success": true, "stored": false, "details": details}))
    }
}

/// Refusal when GitHub App deliveries are not configured (admission and receive agree).
pub(in crate::webhooks) fn not_configured() -> ServiceError {
    ServiceError::invalid("Missing integration id").with_details("deliver to /api/integrations/github/webhook/<integration id>, or set GITHUB_APP_WEBHOOK_SECRET to receive GitHub App deliveries here")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `installation` object of GitHub App deliveries ("Webhook events and payloads",
    /// "installation" property: `{"id": <integer>, "node_id": ...}`).
    #[test]
    fn installation_ids_from_payloads() {
        let push =
            json!({"ref": "refs/heads/main", "installation": {"id": 12345678, "node_id": "MDIz"}});
        assert_eq!(installation_id(&push).as_deref(), Some("12345678"));
        assert_eq!(installation_id(&json!({"zen": "Keep it simple"})), None);
        assert_eq!(installation_id(&json!({"installation": {"id": "1"}})), None);
    }
}
