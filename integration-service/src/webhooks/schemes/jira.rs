//! Jira / Atlassian webhooks, of two kinds:
//! - admin webhooks registered by hand with a secret: `X-Hub-Signature: sha256=<hex
//!   HMAC-SHA256(secret, raw body)>` under the integration's generated secret;
//! - dynamic webhooks the service registered (route 15, `subscriptions::jira`): Jira signs
//!   those for the OAuth 2.0 app, with `Authorization: Bearer <JWT>` (HS256 under the app's
//!   client secret, `exp` required). The app's secret is the same for every organization, so
//!   the body's `matchedWebhookIds` must also name a Jira subscription of the integration the
//!   URL names: a captured delivery of one organization is refused at another's URL.
//!
//! The dedupe key is `X-Atlassian-Webhook-Identifier` (the same across Atlassian's retries);
//! the event is the body's `webhookEvent`, read once the signature has matched.
//!
//! Invariant: the HMAC is checked on the raw bytes before the body is parsed; a JWT is
//! checked before the body is read for `matchedWebhookIds`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Guide, Headers, Scheme, SecretSource};
use crate::webhooks::{
    delivery::unauthenticated,
    receive::{bad_request, field, hub_signed_integration, store_one, Answered, Delivery, Item},
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult, providers::ProviderClient, store};

/// Seconds of clock difference allowed on a JWT's `exp`.
const JWT_LEEWAY: u64 = 60;

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
        // `X-Hub-Signature` or `Authorization`: `receive` refuses a delivery with neither.
        signature: None,
        ..Headers::NONE
    },
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    // A bearer token without `X-Hub-Signature`: a dynamic webhook's; anything else must carry
    // the admin webhook's signature (401 when it does not).
    let bearer = delivery
        .header("authorization")
        .filter(|_| delivery.header("x-hub-signature").is_none())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    let credential = match bearer {
        Some(token) => Credential::AppJwt(token),
        None => {
            Credential::HubSignature(delivery.credential("x-hub-signature", "X-Hub-Signature")?)
        }
    };
    let delivery_id = delivery.required(
        "x-atlassian-webhook-identifier",
        "X-Atlassian-Webhook-Identifier",
        200,
    )?;
    let (integration_id, body) = match credential {
        Credential::HubSignature(signature) => (
            hub_signed_integration(ctx, runtime, &delivery, signature, "X-Hub-Signature").await?,
            parse(&delivery.body)?,
        ),
        Credential::AppJwt(token) => app_signed_integration(ctx, &delivery, &token).await?,
    };
    let (event_type, payload) = event_of(&body, &delivery.body)?;
    let item = Item::new(event_type, delivery_id, payload);
    store_one(runtime, integration_id, &delivery, item).await
}

/// What a delivery authenticates with.
enum Credential {
    /// An admin webhook's `X-Hub-Signature`.
    HubSignature(String),
    /// A dynamic webhook's `Authorization: Bearer` JWT.
    AppJwt(String),
}

/// The claims a dynamic webhook's JWT must carry (`exp` is checked by the validation).
#[derive(Deserialize)]
struct AppClaims {}

/// The integration the URL names, for a dynamic webhook's delivery: the JWT verifies under the
/// Atlassian app's client secret, and the body's `matchedWebhookIds` names one of the
/// integration's live Jira subscriptions. Answers the integration and the parsed body.
async fn app_signed_integration(
    ctx: &AppContext,
    delivery: &Delivery,
    token: &str,
) -> ServiceResult<(Uuid, Value)> {
    let refused =
        || unauthenticated("the Authorization JWT does not verify with the app's client secret");
    let provider = ctx.catalog.get(&delivery.provider).ok_or_else(refused)?;
    let client = ProviderClient::configured(&ctx.config, provider).map_err(|_| refused())?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_aud = false;
    validation.leeway = JWT_LEEWAY;
    jsonwebtoken::decode::<AppClaims>(
        token,
        &DecodingKey::from_secret(client.client_secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|_| refused())?;
    let integration_id = delivery.url_integration()?;
    let body = parse(&delivery.body)?;
    let matched: Vec<u64> = body["matchedWebhookIds"]
        .as_array()
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let ours = store::subscriptions::live_of_integration(&ctx.db, integration_id).await?;
    let named = ours
        .iter()
        .filter(|s| s.provider == delivery.provider)
        .filter_map(|s| s.provider_subscription_id.as_deref())
        .filter_map(|id| id.rsplit_once('/')?.1.parse::<u64>().ok())
        .any(|id| matched.contains(&id));
    if !named {
        return Err(unauthenticated(
            "matchedWebhookIds names no Jira subscription of this integration",
        ));
    }
    Ok((integration_id, body))
}

fn parse(body: &[u8]) -> ServiceResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))
}

/// The event type of a parsed body (`webhookEvent`, e.g. `jira:issue_created`), and the
/// body's text.
fn event_of(value: &Value, body: &[u8]) -> ServiceResult<(String, String)> {
    let event_type = field(value, "/webhookEvent", 100)
        .ok_or_else(|| bad_request("Invalid webhook body", "the webhookEvent field is missing"))?;
    // Stored as sent; it was just parsed, so it is UTF-8.
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| bad_request("Invalid webhook body", "the body is not UTF-8"))?;
    Ok((event_type, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jira_event(body: &[u8]) -> ServiceResult<(String, String)> {
        event_of(&parse(body)?, body)
    }

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
