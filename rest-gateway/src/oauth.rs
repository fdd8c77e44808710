//! `/authorize` and the callbacks: starting authorization and completing it from a provider's
//! redirect or the frontend, translated onto `integrations.v1.OAuthService`. (The `/webhook`
//! settings routes, on the same service, are `webhook_settings.rs`.)

use http::{header, request::Parts, HeaderValue, StatusCode};
use hyper::body::Incoming;
use integrations_proto::v1::{
    CompleteAuthorizationRequest, CompleteAuthorizationResponse, StartAuthorizationRequest,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::GatewayError,
    http::{json, redirect, HttpResponse},
    upstream::forwarded,
    Gateway,
};

/// Longest query parameter forwarded from a callback; real codes and states are far shorter.
const MAX_CALLBACK_PARAM: usize = 4096;

/// Adds the service's `Set-Cookie` value, when it sent one.
fn with_cookie(mut response: HttpResponse, set_cookie: Option<String>) -> HttpResponse {
    if let Some(value) = set_cookie.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// `POST /api/integrations/{id}/authorize` → `{"redirectUrl": ...}` and the state cookie.
pub(crate) async fn authorize(
    gateway: &Gateway,
    parts: &Parts,
    id: String,
) -> Result<HttpResponse, GatewayError> {
    let started = gateway
        .upstream
        .oauth()
        .start_authorization(forwarded(&parts.headers, StartAuthorizationRequest { id }))
        .await?
        .into_inner();
    Ok(with_cookie(
        json(
            StatusCode::OK,
            &json!({ "redirectUrl": started.redirect_url }),
        ),
        started.set_cookie,
    ))
}

/// `GET /api/auth/code/github` and `GET /api/integrations/{provider}/callback`: a 302 to the app.
pub(crate) async fn callback(
    gateway: &Gateway,
    parts: &Parts,
    provider: String,
) -> Result<HttpResponse, GatewayError> {
    let mut request = CompleteAuthorizationRequest {
        provider,
        ..Default::default()
    };
    for (name, value) in
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
    {
        if value.len() > MAX_CALLBACK_PARAM {
            continue;
        }
        let slot = match name.as_ref() {
            "code" => &mut request.code,
            "state" => &mut request.state,
            "error" => &mut request.error,
            "installation_id" => &mut request.installation_id,
            _ => continue,
        };
        // The first occurrence wins; a repeated parameter cannot override it.
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    let completed = complete(gateway, parts, request).await?;
    Ok(with_cookie(
        redirect(&completed.redirect_url)?,
        completed.set_cookie,
    ))
}

/// `CompleteAuthorization` with the request's credentials (both callback routes).
async fn complete(
    gateway: &Gateway,
    parts: &Parts,
    request: CompleteAuthorizationRequest,
) -> Result<CompleteAuthorizationResponse, GatewayError> {
    Ok(gateway
        .upstream
        .oauth()
        .complete_authorization(forwarded(&parts.headers, request))
        .await?
        .into_inner())
}

/// The body the frontend posts in frontend callback mode: the query parameters the provider
/// returned the browser with.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontendCallback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// GitHub App install-and-authorize redirects carry it.
    #[serde(default)]
    installation_id: Option<String>,
}

/// `POST /api/integrations/{provider}/callback` (`OAUTH_FRONTEND_CALLBACK_URL` mode): the
/// frontend completes the flow with the user's session → `{"redirectUrl", "success"}`, the
/// same outcome the redirect of the gateway's own callback carries.
pub(crate) async fn callback_from_frontend(
    gateway: &Gateway,
    parts: &Parts,
    body: Incoming,
    provider: String,
) -> Result<HttpResponse, GatewayError> {
    let posted: FrontendCallback = gateway.json_body(parts, body).await?;
    let bounded = |value: Option<String>| value.filter(|v| v.len() <= MAX_CALLBACK_PARAM);
    let request = CompleteAuthorizationRequest {
        provider,
        code: bounded(posted.code),
        state: bounded(posted.state),
        error: bounded(posted.error),
        installation_id: bounded(posted.installation_id),
        from_frontend: true,
    };
    let completed = complete(gateway, parts, request).await?;
    Ok(with_cookie(
        json(
            StatusCode::OK,
            &json!({ "redirectUrl": completed.redirect_url, "success": completed.success }),
        ),
        completed.set_cookie,
    ))
}
