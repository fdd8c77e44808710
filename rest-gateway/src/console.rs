//! The operator console (route 16): HTML pages under `/console` for an organization's
//! Owner/Admin — its integrations, one integration's settings and webhook setup, its
//! deliveries — served by the gateway itself.
//!
//! The console is one more client of the service: every page calls the same gRPC methods as
//! the JSON routes, with the same forwarded credentials (`upstream::forwarded`), so who may
//! see or change what is the service's decision alone (a Member gets the service's 403,
//! another organization's integration its 404, both rendered as pages). It holds no rule and
//! no database access.
//!
//! Why server-rendered HTML with `maud`: the pages are a few forms and tables, which HTML
//! does without a build step or a JavaScript framework to keep alive; `maud` templates are
//! Rust expressions checked by the compiler with the handlers' own types (a renamed field
//! does not compile, there is no template file to drift), and every `(value)` spliced into
//! them is HTML-escaped — unescaped output needs the explicit `PreEscaped`, which this module
//! never uses. (`askama` checks templates at compile time too, but from separate files with
//! their own syntax; `maud` keeps a page beside the code that fetches its data.)
//!
//! Invariants:
//! - every provider-written string (payloads, headers, event types, account names, errors)
//!   is rendered escaped; URLs the console writes are its own paths with percent-encoded ids,
//!   plus the provider authorize URL the service built (rendered only when http(s));
//! - every console response carries `layout::CONTENT_SECURITY_POLICY` (no inline script or
//!   style, nothing third-party, `frame-ancestors 'none'`), `Cache-Control: no-store`,
//!   `nosniff` and `Referrer-Policy: no-referrer`;
//! - a state change is a plain form POST (works without script), accepted only from the
//!   gateway's own origin AND with the session's anti-forgery token (`forgery`); a refused
//!   post calls nothing;
//! - a webhook secret appears in a page only as the answer to an explicit post (reveal,
//!   rotate).
//!
//! Start at [`route`]; pages live in `console/integrations.rs` (list, one integration) with
//! the integration page's sections beside it (`integrations/settings.rs`, `webhook.rs`,
//! `subscriptions.rs`), `console/deliveries.rs` (with `deliveries/replays.rs`) and
//! `console/session.rs` (sign-in, organization switcher, the OAuth return).

mod assets;
mod deliveries;
pub(crate) mod forgery;
mod integrations;
pub(crate) mod layout;
mod session;

use http::{header, request::Parts, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use maud::html;

use crate::{error::GatewayError, http::HttpResponse, Gateway};
use layout::{Notice, Viewer};

/// The console's pages and actions, one per route of `router::ROUTES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// `GET /console`: the integrations, connected and available.
    Integrations,
    /// `GET|POST /console/sign-in`: development sign-in with a `dev-token` session.
    SignIn,
    /// `POST /console/sign-out`.
    SignOut,
    /// `POST /console/organization`: the organization switcher (`org_id` cookie).
    Organization,
    /// `GET /console/organization/integrations`: where the OAuth callback returns when
    /// `APP_URL` is the console (`{PUBLIC_API_URL}/console`).
    Returned,
    /// `GET /console/assets/{name}`: the stylesheet and the script.
    Asset,
    /// `GET /console/integrations/{id}`: status, settings, webhook setup.
    Integration,
    /// `POST /console/integrations/{id}/connect`: starts route 4.
    Connect,
    /// `POST /console/integrations/{id}/settings`.
    Settings,
    /// `GET|POST /console/integrations/{id}/disconnect`: confirmation, then route 2.
    Disconnect,
    /// `POST /console/integrations/{id}/webhook/reveal`.
    RevealSecret,
    /// `POST /console/integrations/{id}/webhook/rotate`.
    RotateSecret,
    /// `POST /console/integrations/{id}/webhook/secret`: a provider-issued secret.
    SetSecret,
    /// `POST /console/integrations/{id}/webhook/handshake`.
    ArmHandshake,
    /// `POST /console/integrations/{id}/subscriptions`: route 15's create.
    CreateSubscription,
    /// `POST /console/integrations/{id}/subscriptions/{subscriptionId}/delete`.
    DeleteSubscription,
    /// `GET /console/integrations/{id}/events`: deliveries, filtered, newest first.
    Events,
    /// `GET|POST /console/integrations/{id}/events/replay-dead`: count, then replay.
    ReplayDead,
    /// `GET /console/integrations/{id}/events/{eventId}`: payload and headers.
    Event,
    /// `POST /console/integrations/{id}/events/{eventId}/replay`.
    Replay,
}

/// A refusal of the service that a page says in place (its status and the sentence), when its
/// status is one of `shown`; any other is the console's error page.
fn refusal(
    status: tonic::Status,
    shown: &[StatusCode],
) -> Result<(StatusCode, String), GatewayError> {
    let err = GatewayError::from(status);
    let code = err.parts().0;
    if shown.contains(&code) {
        Ok((code, err.said()))
    } else {
        Err(err)
    }
}

/// What a console handler is given.
pub(crate) struct Request<'a> {
    pub gateway: &'a Gateway,
    pub parts: Parts,
    /// Taken by the one read of a posted form.
    pub body: Option<Incoming>,
    /// The decoded placeholders of the route, in order.
    pub params: Vec<String>,
}

impl Request<'_> {
    /// The `n`th placeholder (the route table guarantees it exists).
    fn param(&self, n: usize) -> Result<&str, GatewayError> {
        self.params
            .get(n)
            .map(String::as_str)
            .ok_or(GatewayError::NotFound)
    }

    /// The viewer as far as the request tells (the organization is filled in by the pages
    /// whose calls answer it).
    fn viewer(&self, signed_in: bool) -> Viewer {
        Viewer {
            token: self.gateway.console.form_key.token(&self.parts.headers),
            organization: None,
            signed_in,
        }
    }

    /// The query parameter `name`, first occurrence.
    fn query(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.parts.uri.query().unwrap_or_default().as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A posted form, after the forgery checks: same origin first (before the body is read),
    /// then the session's token.
    async fn form(&mut self) -> Result<Form, GatewayError> {
        let config = &self.gateway.config;
        if !forgery::is_same_origin(&self.parts.headers, &config.console.public_origin) {
            return Err(GatewayError::CrossSite);
        }
        let form = read_form(self).await?;
        let token = form.get(forgery::TOKEN_FIELD).unwrap_or_default();
        if !self
            .gateway
            .console
            .form_key
            .verify(&self.parts.headers, token)
        {
            return Err(GatewayError::CrossSite);
        }
        Ok(form)
    }
}

/// The console's state in the gateway: the key of its anti-forgery tokens.
pub struct Console {
    pub form_key: forgery::FormKey,
}

impl Console {
    pub fn new(config: &crate::config::ConsoleConfig) -> Self {
        Self {
            form_key: forgery::FormKey::new(config.form_key),
        }
    }
}

/// A posted `application/x-www-form-urlencoded` body.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_form(request: &mut Request<'_>) -> Result<Form, GatewayError> {
    if crate::http::media_type(&request.parts.headers).as_deref()
        != Some("application/x-www-form-urlencoded")
    {
        return Err(GatewayError::UnsupportedMediaType {
            expected: "application/x-www-form-urlencoded",
        });
    }
    let body = request.body.take().ok_or(GatewayError::Internal)?;
    let bytes = crate::http::read_body(
        &request.parts.headers,
        body,
        request.gateway.config.json_body_limit,
        request.gateway.config.body_rate,
    )
    .await?;
    Ok(Form(
        url::form_urlencoded::parse(&bytes)
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect(),
    ))
}

/// Serves a console route: the method check, the credentials check and the page, every
/// outcome an HTML answer with the console's headers.
pub(crate) async fn route(
    gateway: &Gateway,
    page: Page,
    allow: &'static str,
    parts: Parts,
    body: Incoming,
    raw_params: Vec<String>,
) -> HttpResponse {
    let method = parts.method.clone();
    let mut request = Request {
        gateway,
        parts,
        body: Some(body),
        params: Vec::new(),
    };
    let outcome = async {
        if !allow.split(", ").any(|m| m == method.as_str()) {
            return Err(GatewayError::MethodNotAllowed { allow });
        }
        crate::upstream::check_credentials(&request.parts.headers)?;
        for raw in &raw_params {
            request.params.push(crate::http::decode_segment(raw)?);
        }
        serve(&mut request, page, &method).await
    }
    .await;
    match outcome {
        Ok(response) => response,
        Err(err) => error_page(&request, &method, &err),
    }
}

async fn serve(
    request: &mut Request<'_>,
    page: Page,
    method: &Method,
) -> Result<HttpResponse, GatewayError> {
    let post = *method == Method::POST;
    match page {
        Page::Asset => assets::serve(request.param(0)?),
        Page::Integrations => integrations::list(request, None).await,
        Page::Returned => session::returned(request).await,
        Page::SignIn if post => session::sign_in(request).await,
        Page::SignIn => Ok(session::sign_in_page(request, None, StatusCode::OK)),
        Page::SignOut => session::sign_out(request).await,
        Page::Organization => session::switch_organization(request).await,
        Page::Integration => integrations::show(request).await,
        Page::Connect => integrations::connect(request).await,
        Page::Settings => integrations::update_settings(request).await,
        Page::Disconnect if post => integrations::disconnect(request).await,
        Page::Disconnect => integrations::confirm_disconnect(request).await,
        Page::RevealSecret => integrations::reveal_secret(request).await,
        Page::RotateSecret => integrations::rotate_secret(request).await,
        Page::SetSecret => integrations::set_secret(request).await,
        Page::ArmHandshake => integrations::arm_handshake(request).await,
        Page::CreateSubscription => integrations::create_subscription(request).await,
        Page::DeleteSubscription => integrations::delete_subscription(request).await,
        Page::Events => deliveries::list(request).await,
        Page::ReplayDead if post => deliveries::replay_dead(request).await,
        Page::ReplayDead => deliveries::confirm_replay_dead(request).await,
        Page::Event => deliveries::show(request).await,
        Page::Replay => deliveries::replay(request).await,
    }
}

/// An error as a page: the status of the JSON API's mapping, the service's message (escaped),
/// and what the viewer can do next. A page read without a session leads to the sign-in page.
fn error_page(request: &Request<'_>, method: &Method, err: &GatewayError) -> HttpResponse {
    let (status, message, details) = err.parts();
    if status == StatusCode::UNAUTHORIZED
        && *method == Method::GET
        && !request.gateway.config.console.production
    {
        return layout::see_other("/console/sign-in");
    }
    let signed_in = !matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED
    );
    let viewer = request.viewer(signed_in);
    let (title, explanation) = match status {
        StatusCode::UNAUTHORIZED => (
            "Sign-in required",
            "Your session is missing or has expired. Sign in to the application again, then come back.",
        ),
        StatusCode::FORBIDDEN if matches!(err, GatewayError::CrossSite) => (
            "Request refused",
            "This form was not sent from the console itself, or the page was too old. Nothing was changed: reload the page and try again.",
        ),
        StatusCode::FORBIDDEN => (
            "Not allowed",
            "Only an Owner or Admin of the active organization can use the console. Switch to another organization or ask an Owner.",
        ),
        StatusCode::NOT_FOUND => (
            "Not found",
            "There is no such page, or no such integration in the active organization.",
        ),
        StatusCode::METHOD_NOT_ALLOWED => ("Method not allowed", "This page does not answer that method."),
        s if s.is_client_error() => ("Request not accepted", "Check the values and try again."),
        _ => (
            "Something went wrong",
            "The service could not answer. Nothing is lost: try again in a moment.",
        ),
    };
    let body = html! {
        p { (explanation) }
        p.detail { (message) @if let Some(details) = &details { ": " (details) } }
        p {
            @if status == StatusCode::UNAUTHORIZED && !request.gateway.config.console.production {
                a href="/console/sign-in" { "Sign in" }
            } @else {
                a href="/console" { "Back to the integrations" }
            }
        }
    };
    let mut response = layout::html(status, layout::page(&viewer, title, None, body));
    if let GatewayError::MethodNotAllowed { allow } = err {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// A notice from a fixed word of the query (`?done=...`), after a post redirected back.
fn notice_from_query(request: &Request<'_>) -> Option<Notice> {
    let text = match request.query("done")?.as_str() {
        "settings" => "Settings saved.",
        "disconnected" => "Integration disconnected.",
        "secret-set" => "Provider-issued secret stored.",
        "replayed" => "Delivery queued again.",
        "subscription-created" => "Subscription created at the provider.",
        "subscription-deleted" => "Subscription deleted at the provider.",
        "organization" => "Organization switched.",
        _ => return None,
    };
    Some(Notice::Success(text.into()))
}
