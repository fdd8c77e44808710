//! Asana webhooks, from Asana's API reference ("Establish a webhook", "Delete a webhook",
//! "Get a webhook"): `POST /webhooks {"data": {resource, target}}`. Asana answers only after
//! its handshake: it first POSTs to `target` a request carrying `X-Hook-Secret`, which the
//! receiver echoes and keeps — so the service opens the integration's handshake window itself
//! just before the call (`webhooks::schemes::asana` accepts the secret only while it is open, then
//! closes it). `DELETE /webhooks/{gid}`, `GET /webhooks/{gid}` (404 once gone; Asana deletes
//! webhooks that keep failing, which reconciliation repairs). `ASANA_API_URL` overrides
//! `https://app.asana.com/api/1.0`.
//!
//! One live Asana subscription per integration: each Asana webhook signs with the secret of
//! its own handshake, and an integration verifies with one secret.

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{
    api::{ApiClient, ApiError},
    Created, HookSpec,
};
use crate::error::{ServiceError, ServiceResult};

pub(crate) const DEFAULT_API_URL: &str = "https://app.asana.com/api/1.0";
/// How long the handshake window stays open for the service's own `POST /webhooks`.
pub(crate) const HANDSHAKE_WINDOW: chrono::Duration = chrono::Duration::seconds(30);

/// An Asana resource gid (a project, a portfolio, a workspace...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    gid: String,
}

pub(crate) fn parse(resource: &str) -> ServiceResult<Target> {
    if !resource.is_empty() && resource.len() <= 32 && resource.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(Target {
            gid: resource.to_string(),
        })
    } else {
        Err(ServiceError::invalid_field(
            "resource",
            "an Asana resource gid (digits), e.g. a project's",
        ))
    }
}

/// Asana sends every change of the resource (filters are not offered here).
pub(crate) fn default_events() -> Vec<String> {
    vec!["all".to_string()]
}

#[derive(Deserialize)]
struct Envelope {
    data: Webhook,
}

#[derive(Deserialize)]
struct Webhook {
    gid: String,
}

pub(crate) async fn create(
    api: &ApiClient<'_>,
    target: &Target,
    hook: &HookSpec<'_>,
) -> Result<Created, ApiError> {
    let body = json!({ "data": { "resource": target.gid, "target": hook.url } });
    let answer = api
        .send(api.request(Method::POST, "/webhooks").json(&body))
        .await?;
    let created: Envelope = serde_json::from_slice(&answer)
        .map_err(|_| ApiError::Unavailable("Asana's webhook has no gid".into()))?;
    Ok(Created {
        provider_id: created.data.gid,
        expires_at: None,
        channel_resource_id: None,
        issued_secret: None,
    })
}

pub(crate) async fn delete(api: &ApiClient<'_>, gid: &str) -> Result<(), ApiError> {
    api.send(api.request(Method::DELETE, &format!("/webhooks/{}", path_gid(gid)?)))
        .await?;
    Ok(())
}

pub(crate) async fn exists(api: &ApiClient<'_>, gid: &str) -> Result<bool, ApiError> {
    match api
        .send(api.request(Method::GET, &format!("/webhooks/{}", path_gid(gid)?)))
        .await
    {
        Ok(_) => Ok(true),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

fn path_gid(gid: &str) -> Result<&str, ApiError> {
    if !gid.is_empty() && gid.len() <= 32 && gid.bytes().all(|b| b.is_ascii_digit()) {
        Ok(gid)
    } else {
        Err(ApiError::Unavailable(
            "the stored webhook gid is not Asana's".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_gids() {
        assert!(parse("1202345678901234").is_ok());
        for bad in ["", "abc", "12/3", &"1".repeat(33)] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(path_gid("../x").is_err());
    }
}
