//! Microsoft Graph change notifications. Creating a subscription, Graph first POSTs
//! `?validationToken=...`: we answer the token, decoded, as `text/plain` with a 200 (Graph
//! allows 10 s) once the URL's integration is known. Then each notification of a batch (`value`
//! array) must carry `clientState` equal to the integration's generated secret (pass it as the
//! subscription's `clientState`), compared in constant time; lifecycle notifications
//! (`lifecycleEvent`) are stored like changes (`missed` as `subscription.missed`, so consumers
//! resync), and `reauthorizationRequired` / `subscriptionRemoved` also have the subscription
//! renewed or created again at once, in the background (`subscriptions::on_graph_lifecycle`).
//! Graph wants a 202 within 3 s.
//!
//! `clientState` is inside the body, so the body is parsed before verification (bounded by the
//! gateway's size limit); nothing is stored unless every item of the batch matches, and the
//! secret is removed from what is stored. Each item is one event, deduplicated by the SHA-256
//! of its content (Graph gives a notification no id, and redelivers the same content).

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    gitlab::token_matches,
    receive::{
        bad_request, field, load_secrets, store_items, verify_with_integration_secrets, Answer,
        Delivery, Item,
    },
    WebhookRuntime,
};
use crate::{context::AppContext, error::ServiceResult};

/// Longest validation token answered.
const MAX_VALIDATION_TOKEN: usize = 1024;
/// Most notifications in one batch.
const MAX_BATCH: usize = 1000;

pub(super) async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let integration_id = delivery.url_integration()?;
    if let Some(token) = delivery.query_param("validationToken") {
        if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
            return Err(bad_request(
                "Invalid validation token",
                "validationToken: 1 to 1024 characters",
            ));
        }
        // Only an integration that exists and has a secret answers the handshake.
        load_secrets(ctx, runtime, &delivery.provider, integration_id).await?;
        return Ok(Answer::text(token));
    }
    let notifications = parse_batch(&delivery.body)?;
    let states: Vec<String> = notifications
        .iter()
        .map(|n| field(n, "/clientState", 256).unwrap_or_default())
        .collect();
    verify_with_integration_secrets(
        ctx,
        runtime,
        &delivery,
        integration_id,
        "clientState",
        move |secret, _body| states.iter().all(|state| token_matches(secret, state)),
    )
    .await?;
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
    crate::subscriptions::on_graph_lifecycle(ctx, integration_id, lifecycle);
    Ok(Answer::stored_all(202, &ids))
}

/// The notifications of a batch body `{"value": [...]}`.
pub fn parse_batch(body: &[u8]) -> ServiceResult<Vec<Value>> {
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
pub(super) fn item(mut notification: Value) -> Item {
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
    let digest = Sha256::digest(payload.as_bytes());
    Item {
        event_type,
        delivery_id: Some(format!("sha256:{}", hex::encode(digest))),
        payload,
    }
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
        }
    }
}
