//! Microsoft Graph change notifications. Creating a subscription, Graph first POSTs
//! `?validationToken=...`: we answer the token, decoded, as `text/plain` with a 200 (Graph
//! allows 10 s) once the URL's integration is known. Then each notification of a batch (`value`
//! array) must carry `clientState` equal to the integration's generated secret (pass it as the
//! subscription's `clientState`), compared in constant time; lifecycle notifications
//! (`lifecycleEvent`) are stored like changes (`missed` as `subscription.missed`, so consumers
//! resync), and `reauthorizationRequired` / `subscriptionRemoved` also have the subscription
//! renewed or created again at once, in the background (`make_due`: the renewer acts).
//! Graph wants a 202 within 3 s.
//!
//! `clientState` is inside the body: before verification only the `clientState`s are read, by
//! a typed reader that skips everything else and refuses a batch of more than 1000 before
//! allocating for it (bodies are at most 1 MiB, `SCHEME.body_limit`); the whole body is
//! parsed only once every item of the batch matched. The secret is removed from what is stored.
//! The validation handshake is answered only for a connected integration with a secret. Each
//! item is one event, deduplicated by the SHA-256 of its content (Graph gives a notification no
//! id, and redelivers the same content).

use serde_json::Value;

use super::{Guide, Scheme, SecretSource, SMALL_BODY_LIMIT};
use crate::webhooks::{
    receive::{
        bad_request, field, load_secrets, store_items, verify_with_integration_secrets, Answer,
        Answered, Delivery, Item,
    },
    signature::{content_key, token_matches},
    WebhookRuntime,
};
use crate::{
    context::AppContext,
    error::{ServiceError, ServiceResult},
};

/// Longest validation token answered.
const MAX_VALIDATION_TOKEN: usize = 1024;
/// Most notifications in one batch.
const MAX_BATCH: usize = 1000;

/// Microsoft Graph change and lifecycle notifications.
pub static SCHEME: Scheme = Scheme {
    secret: SecretSource::Generated,
    guide: Guide {
        events: &["created", "updated", "deleted"],
        steps: &[
            "POST /subscriptions: notificationUrl and lifecycleNotificationUrl {url}, clientState: the secret shown here",
        ],
        secret_field: Some("clientState"),
        signature_header: None,
        content_type: Some("application/json"),
    },
    body_limit: Some(SMALL_BODY_LIMIT),
    ..Scheme::new(|c, r, d| Box::pin(receive(c, r, d)))
};

async fn receive(ctx: &AppContext, runtime: &WebhookRuntime, delivery: Delivery) -> Answered {
    let integration_id = delivery.url_integration()?;
    if let Some(token) = delivery.query_param("validationToken") {
        if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
            return Err(bad_request(
                "Invalid validation token",
                "validationToken: 1 to 1024 characters",
            ));
        }
        // Only a connected integration with a secret valid now answers the handshake.
        let secrets = load_secrets(ctx, runtime, &delivery.provider, integration_id).await?;
        if secrets.candidates(chrono::Utc::now()).is_empty() {
            return Err(ServiceError::not_found("Webhooks not configured")
                .with_details("the integration has no webhook secret: connect it first"));
        }
        return Ok(Answer::text(token));
    }
    let states = client_states(&delivery.body)?;
    verify_with_integration_secrets(
        ctx,
        runtime,
        &delivery,
        integration_id,
        "clientState",
        move |secret, _body| states.iter().all(|state| token_matches(secret, state)),
    )
    .await?;
    let notifications = parse_batch(&delivery.body)?;
    let lifecycle: Vec<(String, String)> = notifications
        .iter()
        .filter_map(|n| {
            Some((
                field(n, "/subscriptionId", 128)?,
                field(n, "/lifecycleEvent", 100)?,
            ))
        })
        .collect();
    let items = notifications.into_iter().map(item).collect();
    let ids = store_items(runtime, integration_id, &delivery.stored_headers(), items).await?;
    make_due(ctx, integration_id, lifecycle).await;
    Ok(Answer::stored_all(202, &ids))
}

/// `reauthorizationRequired` (a renewal reauthorizes) and `subscriptionRemoved` (the renewal
/// finds it gone and creates it again) make the named subscriptions due now and wake the
/// renewer, which acts in the background: the delivery is answered without waiting for Graph.
/// The notifications are stored already, so a failure here is logged, not answered.
async fn make_due(ctx: &AppContext, integration_id: uuid::Uuid, events: Vec<(String, String)>) {
    let due: Vec<String> = events
        .into_iter()
        .filter(|(_, event)| {
            matches!(
                event.as_str(),
                "reauthorizationRequired" | "subscriptionRemoved"
            )
        })
        .map(|(subscription, _)| subscription)
        .collect();
    if due.is_empty() {
        return;
    }
    match crate::store::subscriptions::make_due(&ctx.db, integration_id, &due, chrono::Utc::now())
        .await
    {
        Ok(0) => {
            tracing::info!(integration = %integration_id, "lifecycle notification for a subscription we do not own")
        }
        Ok(_) => ctx.subscriptions_due.notify_one(),
        Err(e) => {
            tracing::warn!(integration = %integration_id, error = %e, "lifecycle notification not recorded: the renewal happens at its usual time")
        }
    }
}

/// The `clientState` of each notification of a batch, read without building the body's tree:
/// every other field is skipped, a batch of more than 1000 is refused before it is collected,
/// and a state longer than 256 bytes counts as none.
fn client_states(body: &[u8]) -> ServiceResult<Vec<String>> {
    let invalid = |why: String| bad_request("Invalid webhook body", why);
    let batch: StatesOnly =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not a batch: {e}")))?;
    if batch.value.0.is_empty() {
        return Err(invalid("value: 1 to 1000 notification objects".into()));
    }
    Ok(batch
        .value
        .0
        .into_iter()
        .map(|state| {
            state
                .client_state
                .filter(|s| s.len() <= 256)
                .unwrap_or_default()
        })
        .collect())
}

#[derive(serde::Deserialize)]
struct StatesOnly {
    value: CappedStates,
}

#[derive(serde::Deserialize)]
struct StateOnly {
    #[serde(rename = "clientState", default)]
    client_state: Option<String>,
}

/// A sequence of at most [`MAX_BATCH`] notifications' states.
struct CappedStates(Vec<StateOnly>);

impl<'de> serde::Deserialize<'de> for CappedStates {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CappedStates;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of at most {MAX_BATCH} notification objects")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CappedStates, A::Error> {
                let mut states = Vec::new();
                while let Some(state) = seq.next_element::<StateOnly>()? {
                    if states.len() == MAX_BATCH {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_BATCH} notifications"
                        )));
                    }
                    states.push(state);
                }
                Ok(CappedStates(states))
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// The notifications of a batch body `{"value": [...]}`.
fn parse_batch(body: &[u8]) -> ServiceResult<Vec<Value>> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request("Invalid webhook body", format!("not JSON: {e}")))?;
    let Some(Value::Array(items)) = value.get_mut("value").map(Value::take) else {
        return Err(bad_request(
            "Invalid webhook body",
            "expected {\"value\": [notifications]}",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH || !items.iter().all(Value::is_object) {
        return Err(bad_request(
            "Invalid webhook body",
            "value: 1 to 1000 notification objects",
        ));
    }
    Ok(items)
}

/// One stored event of a verified notification, without its `clientState`.
pub(in crate::webhooks) fn item(mut notification: Value) -> Item {
    if let Some(object) = notification.as_object_mut() {
        object.remove("clientState");
    }
    let event_type = field(&notification, "/lifecycleEvent", 100)
        .map(|e| match e.as_str() {
            "missed" => "subscription.missed".to_string(),
            _ => format!("lifecycle.{e}"),
        })
        .or_else(|| field(&notification, "/changeType", 100))
        .unwrap_or_else(|| "notification".into());
    let payload = notification.to_string();
    Item::new(event_type, content_key(payload.as_bytes()), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The change notification example of Microsoft's documentation ("Receive change
    /// notifications through webhooks"):
    /// https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
    const EXAMPLE: &str = r##"{"value":[{"id":"lsgTZMr9KwAAA","subscriptionId":"{subscription_guid}","subscriptionExpirationDateTime":"2016-03-19T22:11:09.952Z","clientState":"secretClientValue","changeType":"created","resource":"users/{user_guid}@{tenant_guid}/messages/{long_id_string}","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95","resourceData":{"@odata.type":"#Microsoft.Graph.Message","@odata.id":"Users/{user_guid}@{tenant_guid}/Messages/{long_id_string}","@odata.etag":"W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"","id":"{long_id_string}"}}]}"##;

    #[test]
    fn documented_example_batch() {
        let items = parse_batch(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            field(&items[0], "/clientState", 256).as_deref(),
            Some("secretClientValue")
        );
        assert!(token_matches(b"secretClientValue", "secretClientValue"));
        let stored = item(items[0].clone());
        assert_eq!(stored.event_type, "created");
        assert!(
            !stored.payload.contains("secretClientValue"),
            "no secret stored"
        );
        // The same notification again has the same key; another one does not.
        assert_eq!(item(items[0].clone()).delivery_id, stored.delivery_id);
        let mut other = items[0].clone();
        other["changeType"] = "updated".into();
        assert_ne!(item(other).delivery_id, stored.delivery_id);
    }

    /// Lifecycle notifications ("Reduce missing subscriptions and change notifications"):
    /// https://learn.microsoft.com/graph/change-notifications-lifecycle-events
    #[test]
    fn lifecycle_notifications_and_bad_batches() {
        let body = br#"{"value":[{"subscriptionId":"s1","lifecycleEvent":"reauthorizationRequired","clientState":"c","resource":"r","organizationId":"o"}]}"#;
        let items = parse_batch(body).unwrap();
        assert_eq!(
            item(items[0].clone()).event_type,
            "lifecycle.reauthorizationRequired"
        );
        let missed =
            br#"{"value":[{"subscriptionId":"s1","lifecycleEvent":"missed","clientState":"c"}]}"#;
        let items = parse_batch(missed).unwrap();
        assert_eq!(item(items[0].clone()).event_type, "subscription.missed");
        for bad in [&b"{}"[..], b"{\"value\":[]}", b"{\"value\":[1]}", b"nope"] {
            assert!(parse_batch(bad).is_err());
            assert!(client_states(bad).is_err());
        }
    }

    /// What verification reads of an unverified body: the states, nothing else; a huge array
    /// is refused at its 1001st item instead of becoming a tree.
    #[test]
    fn states_are_read_without_the_tree() {
        assert_eq!(
            client_states(EXAMPLE.as_bytes()).unwrap(),
            vec!["secretClientValue".to_string()]
        );
        let many = format!("{{\"value\":[{}]}}", vec!["{}"; 1001].join(","));
        assert!(client_states(many.as_bytes()).is_err());
        let thousand = format!("{{\"value\":[{}]}}", vec!["{\"x\":[1,2]}"; 1000].join(","));
        assert_eq!(client_states(thousand.as_bytes()).unwrap().len(), 1000);
        let zeros = format!("[{}]", vec!["0"; 100_000].join(","));
        assert!(client_states(zeros.as_bytes()).is_err(), "not a batch");
    }
}
