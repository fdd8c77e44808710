//! Route table: method and path → handler. Unknown paths are JSON 404s; known paths with
//! another method are JSON 405s with `Allow`.

use http::{Method, Request};
use hyper::body::Incoming;

use crate::{
    error::GatewayError, events, health, http::HttpResponse, integrations, oauth, webhooks, Gateway,
};

pub async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<HttpResponse, GatewayError> {
    let (parts, body) = request.into_parts();
    crate::upstream::check_credentials(&parts.headers)?;
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = parts.method.clone();
    match segments.as_slice() {
        ["metrics"] => match (&method, &gateway.metrics) {
            (&Method::GET, Some(handle)) => Ok(crate::metrics::render(handle, gateway)),
            (_, Some(_)) => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
            (_, None) => Err(GatewayError::NotFound),
        },
        ["health"] | ["healthz"] => match method {
            Method::GET | Method::HEAD => Ok(health::health(gateway).await),
            _ => Err(GatewayError::MethodNotAllowed { allow: "GET, HEAD" }),
        },
        ["api", "integrations"] => match method {
            Method::GET => integrations::list(gateway, &parts).await,
            _ => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
        },
        ["api", "integrations", id] => {
            let id = decode_segment(id)?;
            match method {
                Method::GET => integrations::get(gateway, &parts, id).await,
                Method::PATCH => integrations::update(gateway, &parts, body, id).await,
                Method::DELETE => integrations::disconnect(gateway, &parts, id).await,
                _ => Err(GatewayError::MethodNotAllowed {
                    allow: "GET, PATCH, DELETE",
                }),
            }
        }
        ["api", "auth", "code", "github"] => match method {
            Method::GET => oauth::callback(gateway, &parts, "github".into()).await,
            _ => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
        },
        ["api", "integrations", id, "authorize"] => {
            let id = decode_segment(id)?;
            match method {
                Method::POST => oauth::authorize(gateway, &parts, id).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "POST" }),
            }
        }
        ["api", "integrations", provider, "callback"] => {
            let provider = decode_segment(provider)?;
            match method {
                Method::GET => oauth::callback(gateway, &parts, provider).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
            }
        }
        // GET: the webhook settings of `{id}`; PUT: a provider-issued secret for
        // `{id}`. POST: GitHub deliveries (`/api/integrations/github/webhook`,
        // `?integration_id=`) and Slack's app-level deliveries for `{provider}`.
        ["api", "integrations", id, "webhook"] => {
            let id = decode_segment(id)?;
            match method {
                Method::GET => oauth::webhook_settings(gateway, &parts, id).await,
                Method::POST => webhooks::receive(gateway, &parts, body, id, None).await,
                Method::PUT => oauth::set_webhook_secret(gateway, &parts, body, id).await,
                _ => Err(GatewayError::MethodNotAllowed {
                    allow: "GET, POST, PUT",
                }),
            }
        }
        // Deliveries for the frontend: list, read, replay.
        ["api", "integrations", id, "events"] => {
            let id = decode_segment(id)?;
            match method {
                Method::GET => events::list(gateway, &parts, id).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
            }
        }
        ["api", "integrations", id, "events", event_id] => {
            let id = decode_segment(id)?;
            let event_id = decode_segment(event_id)?;
            match method {
                Method::GET => events::get(gateway, &parts, id, event_id).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "GET" }),
            }
        }
        ["api", "integrations", id, "events", event_id, "replay"] => {
            let id = decode_segment(id)?;
            let event_id = decode_segment(event_id)?;
            match method {
                Method::POST => events::replay(gateway, &parts, id, event_id).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "POST" }),
            }
        }
        ["api", "integrations", id, "webhook", "rotate"] => {
            let id = decode_segment(id)?;
            match method {
                Method::POST => oauth::rotate_webhook_secret(gateway, &parts, body, id).await,
                _ => Err(GatewayError::MethodNotAllowed { allow: "POST" }),
            }
        }
        // Provider deliveries with the integration in the path (the webhook URL the service hands out).
        ["api", "integrations", provider, "webhook", integration_id] => {
            let provider = decode_segment(provider)?;
            let integration_id = decode_segment(integration_id)?;
            match method {
                Method::POST => {
                    webhooks::receive(gateway, &parts, body, provider, Some(integration_id)).await
                }
                _ => Err(GatewayError::MethodNotAllowed { allow: "POST" }),
            }
        }
        _ => Err(GatewayError::NotFound),
    }
}

/// The route template of a path (`:id` placeholders, which every text-format parser reads
/// inside a label), the bounded `route` label of the request metrics.
pub fn template(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["metrics"] => "/metrics",
        ["health"] => "/health",
        ["healthz"] => "/healthz",
        ["api", "integrations"] => "/api/integrations",
        ["api", "integrations", _] => "/api/integrations/:id",
        ["api", "auth", "code", "github"] => "/api/auth/code/github",
        ["api", "integrations", _, "authorize"] => "/api/integrations/:id/authorize",
        ["api", "integrations", _, "callback"] => "/api/integrations/:provider/callback",
        ["api", "integrations", _, "events"] => "/api/integrations/:id/events",
        ["api", "integrations", _, "events", _] => "/api/integrations/:id/events/:eventId",
        ["api", "integrations", _, "events", _, "replay"] => {
            "/api/integrations/:id/events/:eventId/replay"
        }
        ["api", "integrations", _, "webhook"] => "/api/integrations/:id/webhook",
        ["api", "integrations", _, "webhook", "rotate"] => "/api/integrations/:id/webhook/rotate",
        ["api", "integrations", _, "webhook", _] => {
            "/api/integrations/:provider/webhook/:integration_id"
        }
        _ => "unmatched",
    }
}

/// A percent-decoded path segment; ids are short, printable strings.
fn decode_segment(segment: &str) -> Result<String, GatewayError> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| GatewayError::bad_request("Invalid id", "the id is not valid UTF-8"))?;
    if decoded.is_empty() || decoded.len() > 128 || decoded.chars().any(char::is_control) {
        return Err(GatewayError::bad_request(
            "Invalid id",
            "expected an integration UUID or a provider name",
        ));
    }
    Ok(decoded.into_owned())
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
    fn segments_are_decoded_and_bounded() {
        assert_eq!(decode_segment("git%68ub").unwrap(), "github");
        assert!(decode_segment("%ff").is_err());
        assert!(decode_segment("%00").is_err());
        assert!(decode_segment(&"a".repeat(129)).is_err());
    }
}
