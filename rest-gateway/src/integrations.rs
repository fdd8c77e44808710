//! `GET /api/integrations`, `GET|PATCH|DELETE /api/integrations/{id}`: list, read, update and disconnect integrations, translated onto
//! `integrations.v1.IntegrationService`.

use http::{request::Parts, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{
    DisconnectIntegrationRequest, GetIntegrationRequest, Integration, ListIntegrationsRequest,
    UpdateIntegrationRequest,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use crate::{
    error::GatewayError,
    http::{json, Data, HttpResponse, JsonInteger},
    upstream::forwarded,
    Gateway,
};

/// An integration as the frontend sees it (an item of `GET /api/integrations`).
#[derive(Serialize)]
pub(crate) struct IntegrationJson {
    pub id: String,
    pub provider: String,
    pub organization_id: i64,
    pub connected: bool,
    pub status: Option<String>,
    pub permissions: Vec<String>,
    pub config: Value,
    pub sync_enabled: bool,
    pub sync_frequency: Option<i64>,
    pub webhook_url: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub display_name: String,
    pub account_id: Option<String>,
    pub account_name: Option<String>,
}

impl From<Integration> for IntegrationJson {
    fn from(item: Integration) -> Self {
        Self {
            config: serde_json::from_str(&item.config_json).unwrap_or_else(|_| json!({})),
            id: item.id,
            provider: item.provider,
            organization_id: item.organization_id,
            connected: item.connected,
            status: item.status,
            permissions: item.permissions,
            sync_enabled: item.sync_enabled,
            sync_frequency: item.sync_frequency,
            webhook_url: item.webhook_url,
            created_at: item.created_at,
            updated_at: item.updated_at,
            display_name: item.display_name,
            account_id: item.account_id,
            account_name: item.account_name,
        }
    }
}

pub(crate) async fn list(gateway: &Gateway, parts: &Parts) -> Result<HttpResponse, GatewayError> {
    let response = gateway
        .upstream
        .integrations()
        .list_integrations(forwarded(&parts.headers, ListIntegrationsRequest {}))
        .await?
        .into_inner();
    let data: Vec<IntegrationJson> = response.integrations.into_iter().map(Into::into).collect();
    Ok(json(StatusCode::OK, &Data { data }))
}

pub(crate) async fn get(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let item = gateway
        .upstream
        .integrations()
        .get_integration(forwarded(&parts.headers, GetIntegrationRequest { id }))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: IntegrationJson::from(item),
        },
    ))
}

/// PATCH body: camelCase as documented, snake_case accepted; unknown fields are refused so a
/// typo is a clear 400 rather than a silent no-op.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    config: Option<Map<String, Value>>,
    #[serde(default, rename = "syncEnabled", alias = "sync_enabled")]
    sync_enabled: Option<bool>,
    /// `null` clears the frequency.
    #[serde(
        default,
        rename = "syncFrequency",
        alias = "sync_frequency",
        deserialize_with = "present"
    )]
    sync_frequency: Option<Option<JsonInteger>>,
}

/// Distinguishes an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<JsonInteger>>, D::Error> {
    Option::<JsonInteger>::deserialize(deserializer).map(Some)
}

pub(crate) async fn update(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let body: UpdateBody = gateway.json_body(parts, body).await?;
    let request = UpdateIntegrationRequest {
        id,
        config_patch_json: body.config.map(|c| Value::Object(c).to_string()),
        sync_enabled: body.sync_enabled,
        sync_frequency: body.sync_frequency.flatten().map(|n| n.0),
        clear_sync_frequency: matches!(body.sync_frequency, Some(None)),
    };
    let item = gateway
        .upstream
        .integrations()
        .update_integration(forwarded(&parts.headers, request))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &Data {
            data: IntegrationJson::from(item),
        },
    ))
}

pub(crate) async fn disconnect(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let response = gateway
        .upstream
        .integrations()
        .disconnect_integration(forwarded(
            &parts.headers,
            DisconnectIntegrationRequest { id },
        ))
        .await?
        .into_inner();
    Ok(json(
        StatusCode::OK,
        &json!({ "success": response.success, "message": response.message }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_json_object;

    /// A body as the route parses it (a JSON object only).
    fn parse_update_body(bytes: &[u8]) -> Result<UpdateBody, GatewayError> {
        parse_json_object(bytes)
    }

    #[test]
    fn update_body_accepts_both_spellings_and_null_frequency() {
        let body =
            parse_update_body(br#"{"sync_enabled":true,"syncFrequency":null,"config":{"a":1}}"#)
                .unwrap();
        assert_eq!(body.sync_enabled, Some(true));
        assert_eq!(body.sync_frequency, Some(None));
        let body = parse_update_body(br#"{"sync_frequency":3600}"#).unwrap();
        assert_eq!(body.sync_frequency, Some(Some(JsonInteger(3600))));
        let body = parse_update_body(br#"{"syncFrequency":3600.0}"#).unwrap();
        assert_eq!(body.sync_frequency, Some(Some(JsonInteger(3600))));
        let body = parse_update_body(b"{}").unwrap();
        assert_eq!(body.sync_frequency, None);
    }

    #[test]
    fn update_body_type_errors() {
        for bad in [
            r#"{"syncEnabled":"yes"}"#,
            r#"{"syncFrequency":"3600"}"#,
            r#"{"syncFrequency":36.5}"#,
            r#"{"config":[1,2]}"#,
            r#"{"unknown":1}"#,
            "[]",
        ] {
            assert!(parse_update_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
