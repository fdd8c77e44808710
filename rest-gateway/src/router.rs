//! Route table: method and path → handler. [`ROUTES`] is the one list of what the gateway
//! answers (templates and methods): dispatch, the `Allow` header of a 405, the `route` label of
//! the request metrics and the OpenAPI document's coverage test all read it. Unknown paths are
//! JSON 404s; known paths with another method are JSON 405s with `Allow`.

use http::{Method, Request};
use hyper::body::Incoming;

use crate::{
    console::{self, Page},
    cross_site,
    error::GatewayError,
    events, health,
    http::{decode_segment, HttpResponse},
    integrations, oauth, openapi, subscriptions, webhook_settings, webhooks, Gateway,
};

/// One route: its template (`:name` placeholders, which every Prometheus text-format parser
/// reads inside a label; also the `route` label of the request metrics) and the methods it
/// answers, as the `Allow` header lists them.
#[derive(Debug)]
pub(crate) struct Route {
    pub template: &'static str,
    pub allow: &'static str,
    endpoint: Endpoint,
}

impl Route {
    /// The methods of `allow`, one by one.
    pub(crate) fn methods(&self) -> impl Iterator<Item = &'static str> {
        self.allow.split(", ")
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Health,
    OpenApi,
    Integrations,
    Integration,
    GithubCallback,
    Authorize,
    Callback,
    Webhook,
    Events,
    Event,
    Replay,
    RotateWebhookSecret,
    ArmWebhookHandshake,
    ProviderWebhook,
    /// The operator console's pages (`console`), which answer HTML even when they refuse.
    Console(console::Page),
    Subscriptions,
    Subscription,
}

const fn entry(template: &'static str, allow: &'static str, endpoint: Endpoint) -> Route {
    Route {
        template,
        allow,
        endpoint,
    }
}

/// Every route, tried in order: the first whose template matches the path wins (so the
/// literal `rotate` is tried before `:integration_id`).
pub(crate) const ROUTES: &[Route] = &[
    entry("/health", "GET, HEAD", Endpoint::Health),
    entry("/healthz", "GET, HEAD", Endpoint::Health),
    entry("/openapi.json", "GET", Endpoint::OpenApi),
    entry("/api/integrations", "GET", Endpoint::Integrations),
    entry(
        "/api/integrations/:id",
        "GET, PATCH, DELETE",
        Endpoint::Integration,
    ),
    entry("/api/auth/code/github", "GET", Endpoint::GithubCallback),
    entry(
        "/api/integrations/:id/authorize",
        "POST",
        Endpoint::Authorize,
    ),
    // GET: the provider's redirect; POST: the frontend completing it with the user's session
    // (`OAUTH_FRONTEND_CALLBACK_URL` mode).
    entry(
        "/api/integrations/:provider/callback",
        "GET, POST",
        Endpoint::Callback,
    ),
    // GET: the webhook settings of `:id`; PUT: a provider-issued secret for `:id`.
    // POST: GitHub deliveries (`/api/integrations/github/webhook?integration_id=`) and
    // Slack's app-level deliveries, `:id` being the provider.
    entry(
        "/api/integrations/:id/webhook",
        "GET, POST, PUT",
        Endpoint::Webhook,
    ),
    // Deliveries for the frontend: list, read, replay.
    entry("/api/integrations/:id/events", "GET", Endpoint::Events),
    entry(
        "/api/integrations/:id/events/:eventId",
        "GET",
        Endpoint::Event,
    ),
    entry(
        "/api/integrations/:id/events/:eventId/replay",
        "POST",
        Endpoint::Replay,
    ),
    entry(
        "/api/integrations/:id/webhook/rotate",
        "POST",
        Endpoint::RotateWebhookSecret,
    ),
    // Opens the window in which a provider's webhook handshake may set the secret.
    entry(
        "/api/integrations/:id/webhook/handshake",
        "POST",
        Endpoint::ArmWebhookHandshake,
    ),
    // Provider deliveries with the integration in the path (the webhook URL the service
    // hands out).
    entry(
        "/api/integrations/:provider/webhook/:integration_id",
        "POST",
        Endpoint::ProviderWebhook,
    ),
    // The operator console (route 16): HTML pages and form posts, see `console`.
    entry("/console", "GET", Endpoint::Console(Page::Integrations)),
    entry(
        "/console/sign-in",
        "GET, POST",
        Endpoint::Console(Page::SignIn),
    ),
    entry(
        "/console/sign-out",
        "POST",
        Endpoint::Console(Page::SignOut),
    ),
    entry(
        "/console/organization",
        "POST",
        Endpoint::Console(Page::Organization),
    ),
    entry(
        "/console/organization/integrations",
        "GET",
        Endpoint::Console(Page::Returned),
    ),
    entry(
        "/console/assets/:name",
        "GET",
        Endpoint::Console(Page::Asset),
    ),
    entry(
        "/console/integrations/:id",
        "GET",
        Endpoint::Console(Page::Integration),
    ),
    entry(
        "/console/integrations/:id/connect",
        "POST",
        Endpoint::Console(Page::Connect),
    ),
    entry(
        "/console/integrations/:id/settings",
        "POST",
        Endpoint::Console(Page::Settings),
    ),
    entry(
        "/console/integrations/:id/disconnect",
        "GET, POST",
        Endpoint::Console(Page::Disconnect),
    ),
    entry(
        "/console/integrations/:id/webhook/reveal",
        "POST",
        Endpoint::Console(Page::RevealSecret),
    ),
    entry(
        "/console/integrations/:id/webhook/rotate",
        "POST",
        Endpoint::Console(Page::RotateSecret),
    ),
    entry(
        "/console/integrations/:id/webhook/secret",
        "POST",
        Endpoint::Console(Page::SetSecret),
    ),
    entry(
        "/console/integrations/:id/webhook/handshake",
        "POST",
        Endpoint::Console(Page::ArmHandshake),
    ),
    entry(
        "/console/integrations/:id/subscriptions",
        "POST",
        Endpoint::Console(Page::CreateSubscription),
    ),
    entry(
        "/console/integrations/:id/subscriptions/:subscriptionId/delete",
        "POST",
        Endpoint::Console(Page::DeleteSubscription),
    ),
    entry(
        "/console/integrations/:id/events",
        "GET",
        Endpoint::Console(Page::Events),
    ),
    // Before `:eventId`: the literal wins.
    entry(
        "/console/integrations/:id/events/replay-dead",
        "GET, POST",
        Endpoint::Console(Page::ReplayDead),
    ),
    entry(
        "/console/integrations/:id/events/:eventId",
        "GET",
        Endpoint::Console(Page::Event),
    ),
    entry(
        "/console/integrations/:id/events/:eventId/replay",
        "POST",
        Endpoint::Console(Page::Replay),
    ),
    // Provider webhook subscriptions the service manages (route 15).
    entry(
        "/api/integrations/:id/subscriptions",
        "GET, POST",
        Endpoint::Subscriptions,
    ),
    entry(
        "/api/integrations/:id/subscriptions/:subscriptionId",
        "DELETE",
        Endpoint::Subscription,
    ),
];

/// The route of `path` and the raw (still percent-encoded) values of its placeholders. Runs
/// once per request: it walks the templates' segments without collecting them.
fn resolve(path: &str) -> Option<(&'static Route, Vec<&str>)> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    ROUTES.iter().find_map(|route| {
        let mut pattern = route.template.split('/').skip(1);
        let mut params = Vec::new();
        for actual in &segments {
            let expected = pattern.next()?;
            if expected.starts_with(':') {
                params.push(*actual);
            } else if expected != *actual {
                return None;
            }
        }
        pattern.next().is_none().then_some((route, params))
    })
}

pub(crate) async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<HttpResponse, GatewayError> {
    let (parts, body) = request.into_parts();
    let resolved = resolve(parts.uri.path());
    if let Some((route, raw)) = &resolved {
        if let Endpoint::Console(page) = route.endpoint {
            // The console answers everything itself, as HTML with its own headers.
            let (allow, raw) = (route.allow, raw.iter().map(|s| s.to_string()).collect());
            return Ok(console::route(gateway, page, allow, parts, body, raw).await);
        }
    }
    crate::upstream::check_credentials(&parts.headers)?;
    let (route, raw_params) = resolved.ok_or(GatewayError::NotFound)?;
    let method = parts.method.clone();
    if !route.methods().any(|allowed| allowed == method.as_str()) {
        return Err(GatewayError::MethodNotAllowed { allow: route.allow });
    }
    if is_browser_state_change(route.endpoint, &method) {
        cross_site::check(&method, &parts.headers, &gateway.config.app_origin)?;
    }
    let mut params = Vec::with_capacity(raw_params.len());
    for raw in raw_params {
        params.push(decode_segment(raw)?);
    }
    let mut params = params.into_iter();
    // Every placeholder of the template was captured, so `param()` only fails on a handler
    // asking for more than its template has: a 404 rather than a panic.
    let mut param = || params.next().ok_or(GatewayError::NotFound);
    match (route.endpoint, method) {
        (Endpoint::Health, _) => Ok(health::health(gateway).await),
        (Endpoint::OpenApi, _) => Ok(openapi::document()),
        (Endpoint::Integrations, _) => integrations::list(gateway, &parts).await,
        (Endpoint::Integration, Method::GET) => integrations::get(gateway, &parts, param()?).await,
        (Endpoint::Integration, Method::PATCH) => {
            integrations::update(gateway, &parts, body, param()?).await
        }
        (Endpoint::Integration, _) => integrations::disconnect(gateway, &parts, param()?).await,
        (Endpoint::GithubCallback, _) => oauth::callback(gateway, &parts, "github".into()).await,
        (Endpoint::Authorize, _) => oauth::authorize(gateway, &parts, param()?).await,
        (Endpoint::Callback, Method::POST) => {
            oauth::callback_from_frontend(gateway, &parts, body, param()?).await
        }
        (Endpoint::Callback, _) => oauth::callback(gateway, &parts, param()?).await,
        (Endpoint::Webhook, Method::GET) => webhook_settings::get(gateway, &parts, param()?).await,
        (Endpoint::Webhook, Method::POST) => {
            webhooks::receive(gateway, &parts, body, param()?, None).await
        }
        (Endpoint::Webhook, _) => {
            webhook_settings::set_secret(gateway, &parts, body, param()?).await
        }
        (Endpoint::Events, _) => events::list(gateway, &parts, param()?).await,
        (Endpoint::Event, _) => events::get(gateway, &parts, param()?, param()?).await,
        (Endpoint::Replay, _) => events::replay(gateway, &parts, param()?, param()?).await,
        (Endpoint::RotateWebhookSecret, _) => {
            webhook_settings::rotate(gateway, &parts, body, param()?).await
        }
        (Endpoint::ArmWebhookHandshake, _) => {
            webhook_settings::arm_handshake(gateway, &parts, body, param()?).await
        }
        (Endpoint::ProviderWebhook, _) => {
            let provider = param()?;
            let integration_id = param()?;
            webhooks::receive(gateway, &parts, body, provider, Some(integration_id)).await
        }
        // Served above, before the JSON routes' checks.
        (Endpoint::Console(_), _) => Err(GatewayError::NotFound),
        (Endpoint::Subscriptions, Method::GET) => {
            subscriptions::list(gateway, &parts, param()?).await
        }
        (Endpoint::Subscriptions, _) => {
            subscriptions::create(gateway, &parts, body, param()?).await
        }
        (Endpoint::Subscription, _) => {
            subscriptions::delete(gateway, &parts, param()?, param()?).await
        }
    }
}

/// The state changes a browser makes with its session (not provider deliveries and callbacks,
/// which carry no session): checked for cross-site forgery before anything else.
fn is_browser_state_change(endpoint: Endpoint, method: &Method) -> bool {
    match endpoint {
        Endpoint::Integration => matches!(*method, Method::PATCH | Method::DELETE),
        Endpoint::Webhook => *method == Method::PUT,
        Endpoint::Callback | Endpoint::Subscriptions => *method == Method::POST,
        Endpoint::Authorize
        | Endpoint::Replay
        | Endpoint::RotateWebhookSecret
        | Endpoint::ArmWebhookHandshake
        | Endpoint::Subscription => true,
        Endpoint::Health
        | Endpoint::OpenApi
        | Endpoint::Integrations
        | Endpoint::GithubCallback
        | Endpoint::Events
        | Endpoint::Event
        | Endpoint::ProviderWebhook => false,
        // The console checks its own posts (`console::forgery`).
        Endpoint::Console(_) => false,
    }
}

/// The route template of a path, the bounded `route` label of the request metrics.
pub(crate) fn template(path: &str) -> &'static str {
    resolve(path).map_or("unmatched", |(route, _)| route.template)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_segment_decodes_or_is_a_clean_400(segment in "\\PC{0,200}|(%[0-9a-fA-F]{2}){0,80}") {
            match decode_segment(&segment) {
                Ok(id) => prop_assert!(!id.is_empty() && id.len() <= 128),
                Err(err) => prop_assert_eq!(err.parts().0.as_u16(), 400),
            }
        }
    }

    #[test]
    fn templates_hide_ids() {
        assert_eq!(
            template("/api/integrations/github/"),
            "/api/integrations/:id"
        );
        assert_eq!(
            template("/api/integrations/github/events/0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b/replay"),
            "/api/integrations/:id/events/:eventId/replay"
        );
        assert_eq!(template("/wp-admin/x/y/z/w/v"), "unmatched");
    }

    #[test]
    fn literals_win_over_placeholders_and_templates_resolve_to_themselves() {
        assert_eq!(
            template("/api/integrations/github/webhook/rotate"),
            "/api/integrations/:id/webhook/rotate"
        );
        assert_eq!(
            template("/api/integrations/gitlab/webhook/0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
            "/api/integrations/:provider/webhook/:integration_id"
        );
        for route in ROUTES {
            let example = route.template.replace(':', "x-");
            assert_eq!(template(&example), route.template, "{example}");
            assert!(route.methods().all(|m| m.parse::<Method>().is_ok()));
        }
        let (_, params) = resolve("/api/integrations/a%2Fb/events/e1/replay/").unwrap();
        assert_eq!(params, ["a%2Fb", "e1"]);
    }

    #[test]
    fn segments_are_decoded_and_bounded() {
        assert_eq!(decode_segment("git%68ub").unwrap(), "github");
        assert!(decode_segment("%ff").is_err());
        assert!(decode_segment("%00").is_err());
        assert!(decode_segment(&"a".repeat(129)).is_err());
    }
}
