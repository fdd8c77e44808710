//! Provider webhook subscriptions (route 15), translated onto
//! `integrations.v1.SubscriptionService` (the rules — Owner/Admin, organization scope,
//! idempotent create, the provider calls — are the service's):
//! `GET|POST /api/integrations/{id}/subscriptions`,
//! `DELETE /api/integrations/{id}/subscriptions/{subscriptionId}`.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, ListSubscriptionsRequest, Subscription,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::GatewayError,
    http::{json, Data, HttpResponse},
    upstream::forwarded,
    Gateway,
};

/// A subscription as the frontend sees it.
#[derive(Debug, Serialize)]
pub(crate) struct SubscriptionJson {
    pub id: String,
    pub integration_id: String,
    pub provider: String,
    pub resource: String,
    pub events: Vec<String>,
    /// PENDING, ACTIVE, FAILED or DELETED.
    pub state: String,
    pub provider_subscription_id: Option<String>,
    pub expires_at: Option<String>,
    pub renewed_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Subscription> for SubscriptionJson {
    fn from(item: Subscription) -> Self {
        Self {
            id: item.id,
            integration_id: item.integration_id,
            provider: item.provider,
            resource: item.resource,
            events: item.events,
            state: item.state,
            provider_subscription_id: item.provider_subscription_id,
            expires_at: item.expires_at,
            renewed_at: item.renewed_at,
            last_error: item.last_error,
            created_at: item.created_at,
            updated_at: item.updated_at,
        }
    }
}

/// The create body: `resource`, and `events` (optional: the provider's default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    resource: String,
    #[serde(default)]
    events: Option<Vec<String>>,
}

pub(crate) async fn list(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let response = gateway
        .upstream
        .subscriptions()
        .list_subscriptions(forwarded(
            &parts.headers,
            ListSubscriptionsRequest { integration_id: id },
        ))
        .await?
        .into_inner();
    let data: Vec<SubscriptionJson> = response.subscriptions.into_iter().map(Into::into).collect();
    Ok(json(StatusCode::OK, &Data { data }))
}

pub(crate) async fn create(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    // Like every management route: 401 before a byte of the body is read without credentials.
    let body: CreateBody = gateway.json_body(parts, body).await?;
    let item = gateway
        .upstream
        .subscriptions()
        .create_subscription(forwarded(
            &parts.headers,
            CreateSubscriptionRequest {
                integration_id: id,
                resource: body.resource,
                events: body.events.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: SubscriptionJson::from(item),
        },
    ))
}

pub(crate) async fn delete(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
    subscription_id: String,
) -> Result<HttpResponse, GatewayError> {
    let item = gateway
        .upstream
        .subscriptions()
        .delete_subscription(forwarded(
            &parts.headers,
            DeleteSubscriptionRequest {
                integration_id: id,
                subscription_id,
            },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: SubscriptionJson::from(item),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_json_object;

    /// A body as the route parses it (a JSON object only).
    fn parse_create_body(bytes: &[u8]) -> Result<CreateBody, GatewayError> {
        parse_json_object(bytes)
    }

    #[test]
    fn create_body_takes_a_resource_and_optional_events() {
        let body = parse_create_body(br#"{"resource":"o/r","events":["push"]}"#).unwrap();
        assert_eq!(body.resource, "o/r");
        assert_eq!(body.events, Some(vec!["push".to_string()]));
        assert_eq!(
            parse_create_body(br#"{"resource":"o/r"}"#).unwrap().events,
            None
        );
        for bad in [
            "[]",
            "{}",
            r#"{"resource":1}"#,
            r#"{"resource":"o/r","events":"push"}"#,
            r#"{"resource":"o/r","extra":1}"#,
        ] {
            assert!(parse_create_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
