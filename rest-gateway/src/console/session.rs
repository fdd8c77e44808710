//! Who is looking: the development sign-in (a `dev-token` session into the `sb-access-token`
//! cookie the service already reads), sign-out, the organization switcher (the API's `org_id`
//! selector) and the page the OAuth callback returns to when `APP_URL` is the console.
//!
//! Whether a session is valid is the service's answer, never the console's: the sign-in form
//! asks `ListIntegrations` with the pasted token before setting the cookie.

use http::{header, HeaderValue, StatusCode};
use integrations_proto::v1::ListIntegrationsRequest;
use maud::html;

use super::{
    layout::{self, Notice},
    Request,
};
use crate::{error::GatewayError, http::HttpResponse};

/// The cookie the service reads a session from (see `integration-service/src/auth.rs`).
const SESSION_COOKIE: &str = "sb-access-token";
/// The API's organization selector.
const ORGANIZATION_COOKIE: &str = "org_id";

/// `GET /console/sign-in`: in development a form taking a session token; in production a
/// pointer to the application, whose session the console shares.
pub(super) fn sign_in_page(
    request: &Request<'_>,
    error: Option<&str>,
    status: StatusCode,
) -> HttpResponse {
    let viewer = request.viewer(false);
    let production = request.gateway.config.console.production;
    let notice = error.map(|e| Notice::Error(e.to_string()));
    let body = html! {
        @if production {
            p { "The console uses the application's session. Sign in to the application, then open this page again." }
        } @else {
            section.card {
                p {
                    "Development sign-in. Make a session with "
                    code { "integration-service dev-token --org 1 --user <UUID> --role OWNER" }
                    " and paste it here."
                }
                form method="post" action="/console/sign-in" {
                    (layout::token_field(&viewer))
                    label for="session-token" { "Session token" }
                    input id="session-token" name="token" type="password" autocomplete="off" required;
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    layout::html(
        status,
        layout::page(&viewer, "Sign in", notice.as_ref(), body),
    )
}

/// `POST /console/sign-in` (development only): the service must accept the token before it
/// becomes the `sb-access-token` cookie (HttpOnly, SameSite=Lax, Secure under https).
pub(super) async fn sign_in(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    if request.gateway.config.console.production {
        return Err(GatewayError::NotFound);
    }
    // No session yet, so no session token to check: the origin check is the defence (a
    // cross-site page cannot sign the viewer in as someone else).
    if !super::forgery::is_same_origin(
        &request.parts.headers,
        &request.gateway.config.console.public_origin,
    ) {
        return Err(GatewayError::CrossSite);
    }
    let form = super::read_form(request).await?;
    let token = form.get("token").unwrap_or_default().trim();
    let refuse = |why: &str| Ok(sign_in_page(request, Some(why), StatusCode::BAD_REQUEST));
    if token.is_empty()
        || token.len() > 8192
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return refuse("That is not a session token: paste the whole output of dev-token.");
    }
    let mut call = tonic::Request::new(ListIntegrationsRequest {});
    let bearer = format!("Bearer {token}");
    let Ok(value) = tonic::metadata::MetadataValue::try_from(bearer.as_str()) else {
        return refuse("That is not a session token: paste the whole output of dev-token.");
    };
    call.metadata_mut().insert("authorization", value);
    match request
        .gateway
        .upstream
        .integrations()
        .list_integrations(call)
        .await
    {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            return refuse("The service did not accept that session token (expired, or signed with another secret).");
        }
        // A valid session of a Member or of a user without an organization: signed in, and
        // the console's pages will say what they may not do.
        Err(status) if status.code() == tonic::Code::PermissionDenied => {}
        Err(status) => return Err(status.into()),
    }
    let mut response = layout::see_other("/console");
    set_cookie(request, &mut response, SESSION_COOKIE, token, None);
    Ok(response)
}

/// `POST /console/sign-out`: forgets the session cookie (and the organization selector).
pub(super) async fn sign_out(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    request.form().await?;
    let mut response = layout::see_other("/console/sign-in");
    set_cookie(request, &mut response, SESSION_COOKIE, "", Some(0));
    set_cookie(request, &mut response, ORGANIZATION_COOKIE, "", Some(0));
    Ok(response)
}

/// `POST /console/organization`: sets the API's `org_id` selector; whether the viewer is a
/// member there is the service's answer on the next page (403 when not). An empty field goes
/// back to the default organization.
pub(super) async fn switch_organization(
    request: &mut Request<'_>,
) -> Result<HttpResponse, GatewayError> {
    let form = request.form().await?;
    let value = form.get("organization").unwrap_or_default().trim();
    let mut response = layout::see_other("/console?done=organization");
    if value.is_empty() {
        set_cookie(request, &mut response, ORGANIZATION_COOKIE, "", Some(0));
        return Ok(response);
    }
    let organization = value
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            GatewayError::bad_request(
                "Invalid organization",
                "an organization id is a positive whole number",
            )
        })?;
    set_cookie(
        request,
        &mut response,
        ORGANIZATION_COOKIE,
        &organization.to_string(),
        None,
    );
    Ok(response)
}

/// `GET /console/organization/integrations`: where the OAuth callback sends the browser when
/// `APP_URL` is `{PUBLIC_API_URL}/console` — the integrations, with the outcome the
/// callback's fixed words tell.
pub(super) async fn returned(request: &mut Request<'_>) -> Result<HttpResponse, GatewayError> {
    let notice = match (request.query("success"), request.query("error")) {
        (Some(success), _) => Some(match success.strip_suffix("_connected") {
            Some(provider)
                if !provider.is_empty()
                    && provider
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') =>
            {
                Notice::Success(format!("Connected: {provider}."))
            }
            _ => Notice::Success("Connected.".into()),
        }),
        (None, Some(error)) => Some(Notice::Error(
            match error.as_str() {
                "access_denied" => "The connection was declined at the provider.",
                "invalid_state" => "The connection expired or was started in another browser: start it again.",
                "callback_failed" => "The provider did not complete the connection: try again.",
                "already_connected" => "That provider account is connected to another organization: nothing was changed.",
                "forbidden" => "Only an Owner or Admin can finish a connection: nothing was changed.",
                _ => "The connection did not complete.",
            }
            .into(),
        )),
        (None, None) => None,
    };
    super::integrations::list(request, notice).await
}

/// Adds a `Set-Cookie` for a console cookie: path `/` (the API reads it too), HttpOnly,
/// SameSite=Lax, Secure when `PUBLIC_API_URL` is https; `max_age` 0 deletes it.
fn set_cookie(
    request: &Request<'_>,
    response: &mut HttpResponse,
    name: &str,
    value: &str,
    max_age: Option<u32>,
) {
    let secure = if request.gateway.config.console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let max_age = max_age.map_or(String::new(), |age| format!("; Max-Age={age}"));
    let cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{max_age}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
