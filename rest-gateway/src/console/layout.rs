//! The console's page shell and its HTTP answers: every console response, page or redirect,
//! goes through `html` or `see_other` and so carries the same security headers.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use maud::{html, Markup, DOCTYPE};

use crate::http::HttpResponse;

use super::forgery::TOKEN_FIELD;

/// No inline script or style, nothing from another origin, never framed, forms only to us.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The headers of every console response.
pub(crate) fn security_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// An HTML page.
pub(crate) fn html(status: StatusCode, page: Markup) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(page.into_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(response.headers_mut());
    response
}

/// A 303 to a console path (after a post, or to the sign-in page).
pub(crate) fn see_other(location: &str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    security_headers(response.headers_mut());
    response
}

/// What every page's shell needs to know about the viewer.
pub(crate) struct Viewer {
    /// The anti-forgery token of the viewer's session, put in every form.
    pub token: String,
    /// The active organization, when a call told it.
    pub organization: Option<i64>,
    /// Whether the viewer's session was accepted (navigation and sign-out shown).
    pub signed_in: bool,
}

/// A message shown at the top of a page.
pub(crate) enum Notice {
    Success(String),
    Error(String),
}

/// The hidden anti-forgery field of a form.
pub(crate) fn token_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name=(TOKEN_FIELD) value=(viewer.token); }
}

/// The whole page: `title` (also the `<h1>`), navigation, organization switcher, `body`.
pub(crate) fn page(viewer: &Viewer, title: &str, notice: Option<&Notice>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Integrations console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Integrations console" }
                    @if viewer.signed_in {
                        nav aria-label="Console" {
                            a href="/console" { "Integrations" }
                        }
                        (organization_switcher(viewer))
                        form.inline method="post" action="/console/sign-out" {
                            (token_field(viewer))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Success(text)) => p.notice.success role="status" { (text) },
                        Some(Notice::Error(text)) => p.notice.error role="alert" { (text) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// The API's organization selector (`org_id` cookie) as a form: the active organization, a
/// field to switch, and a way back to the default one.
fn organization_switcher(viewer: &Viewer) -> Markup {
    html! {
        form.switcher method="post" action="/console/organization" {
            (token_field(viewer))
            label for="org-switch" {
                "Organization"
                @if let Some(org) = viewer.organization { " (active: " (org) ")" }
            }
            input id="org-switch" name="organization" type="number" min="1" step="1" inputmode="numeric" required placeholder="id";
            button type="submit" { "Switch" }
        }
    }
}

/// A UTC time the console's script shows in the viewer's zone; without script it reads as
/// UTC. An unparseable value is shown as the text it is.
pub(crate) fn time(value: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(value) {
        Ok(at) => {
            let utc = at.with_timezone(&chrono::Utc);
            html! {
                time datetime=(utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
                    (utc.format("%Y-%m-%d %H:%M:%S UTC"))
                }
            }
        }
        Err(_) => html! { (value) },
    }
}

/// `time`, or a dash.
pub(crate) fn optional_time(value: Option<&str>) -> Markup {
    match value {
        Some(value) => time(value),
        None => html! { "—" },
    }
}

/// What a path segment keeps unencoded: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, percent-encoded for a URL the console writes.
pub(crate) fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}
