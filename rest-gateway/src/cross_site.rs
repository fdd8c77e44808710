//! Cross-site request forgery defence for the routes a browser drives with its session
//! cookie (PATCH/DELETE an integration, start an authorization, set or rotate a webhook
//! secret, replay a delivery).
//!
//! A request carrying a non-empty `Authorization: Bearer` token is not subject to these
//! checks: a browser never attaches one to a cross-site request without a CORS preflight, and
//! a bearer token is not ambient. Any other `Authorization` (`Basic`, an empty bearer) is
//! checked like a cookie request — and the service refuses it (401) rather than falling back
//! to the cookie. A request authenticated by cookie must:
//! - send `Content-Type: application/json` when it is a `POST`, `PUT` or `PATCH`, so a
//!   cross-site page cannot make it a CORS "simple request" (form posts and `text/plain` need
//!   no preflight); `DELETE` is never simple, so its preflight happens anyway and it needs no
//!   body. Both refusals are 403 `Cross-site request refused`;
//! - when the browser says where it comes from, come from the frontend: an `Origin` header
//!   must be `APP_URL`'s origin, unless `Sec-Fetch-Site: same-origin` says the gateway's own
//!   origin sent it; without `Origin`, `Sec-Fetch-Site: cross-site` is refused.
//!
//! Clients that send neither header (curl, servers) pass the origin check; the content type
//! rule still applies to them when they authenticate with cookies.

use http::{header, HeaderMap, Method};

use crate::{error::GatewayError, http::media_type};

/// `Sec-Fetch-Site` (Fetch Metadata) request header.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Checks a state-changing request for cross-site forgery; `app_origin` is the ASCII
/// serialization of `APP_URL`'s origin (`https://app.example.com`).
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    app_origin: &str,
) -> Result<(), GatewayError> {
    if has_bearer(headers) || !has_session_cookie(headers) {
        // Bearer calls are not ambient; calls without a session are refused by the service.
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).map(|v| v.as_bytes());
    let fetch_site = headers
        .get(SEC_FETCH_SITE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let same_origin = fetch_site.as_deref() == Some("same-origin");
    let allowed = match origin {
        Some(origin) => same_origin || origin.eq_ignore_ascii_case(app_origin.as_bytes()),
        None => fetch_site.as_deref() != Some("cross-site"),
    };
    if !allowed {
        return Err(GatewayError::CrossSite);
    }
    let has_body_method = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if has_body_method && media_type(headers).as_deref() != Some("application/json") {
        // 403, not 415: the request is refused as a possible forgery, whatever its body (and
        // before its session is known to be valid, so it must not read as a content problem).
        return Err(GatewayError::CrossSite);
    }
    Ok(())
}

/// Whether a non-empty `Authorization: Bearer` token is sent.
fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
        })
}

/// Whether a Supabase session cookie is sent (`sb-access-token` or `sb-<ref>-auth-token`,
/// chunked or not): the credential a forged cross-site request would ride on.
fn has_session_cookie(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| pair.split(|b| *b == b'=').next())
        .map(<[u8]>::trim_ascii)
        .any(|name| name.starts_with(b"sb-"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const APP: &str = "https://app.example.com";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn status(method: Method, pairs: &[(&'static str, &'static str)]) -> Option<u16> {
        check(&method, &headers(pairs), APP)
            .err()
            .map(|e| e.parts().0.as_u16())
    }

    const COOKIE: (&str, &str) = ("cookie", "sb-access-token=x; org_id=1");
    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn bearer_and_anonymous_requests_are_not_checked() {
        let bearer = ("authorization", "Bearer t");
        let evil = ("origin", "https://evil.example");
        assert_eq!(status(Method::POST, &[bearer, COOKIE, evil]), None);
        assert_eq!(status(Method::POST, &[evil]), None);
        // Only a real bearer skips the check: `Basic` or an empty bearer ride on the cookie.
        for authorization in ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "Token t"] {
            let header = ("authorization", authorization);
            assert_eq!(
                status(Method::POST, &[header, COOKIE, JSON, evil]),
                Some(403),
                "{authorization}"
            );
        }
        assert_eq!(
            status(Method::POST, &[("cookie", "city=Zurich"), evil]),
            None
        );
    }

    #[test]
    fn cookie_posts_need_json_and_the_frontend_origin() {
        // A form post or text/plain fetch from another site: refused before the service.
        let form = ("content-type", "application/x-www-form-urlencoded");
        let evil = ("origin", "https://evil.example");
        assert_eq!(status(Method::POST, &[COOKIE, form, evil]), Some(403));
        assert_eq!(status(Method::POST, &[COOKIE, JSON, evil]), Some(403));
        assert_eq!(
            status(Method::POST, &[COOKIE, JSON, ("origin", "null")]),
            Some(403)
        );
        assert_eq!(status(Method::POST, &[COOKIE, form]), Some(403));
        assert_eq!(status(Method::POST, &[COOKIE]), Some(403));
        assert_eq!(
            status(Method::PUT, &[COOKIE, ("content-type", "text/plain")]),
            Some(403)
        );
        // The frontend (any case of the origin), and curl without Origin, pass.
        assert_eq!(status(Method::POST, &[COOKIE, JSON, ("origin", APP)]), None);
        assert_eq!(
            status(
                Method::PATCH,
                &[COOKIE, JSON, ("origin", "HTTPS://APP.example.com")]
            ),
            None
        );
        assert_eq!(status(Method::POST, &[COOKIE, JSON]), None);
    }

    #[test]
    fn fetch_metadata_decides_without_origin() {
        let cross = ("sec-fetch-site", "cross-site");
        let same = ("sec-fetch-site", "same-origin");
        let evil = ("origin", "https://evil.example");
        assert_eq!(status(Method::DELETE, &[COOKIE, cross]), Some(403));
        assert_eq!(status(Method::DELETE, &[COOKIE, same]), None);
        assert_eq!(status(Method::DELETE, &[COOKIE]), None);
        // A same-origin page of the gateway itself (its Origin is not APP_URL).
        assert_eq!(
            status(
                Method::POST,
                &[COOKIE, JSON, same, ("origin", "http://api.local")]
            ),
            None
        );
        assert_eq!(
            status(Method::POST, &[COOKIE, JSON, cross, evil]),
            Some(403)
        );
    }

    #[test]
    fn chunked_ssr_cookies_count_as_sessions() {
        let ssr = (
            "cookie",
            "org_id=2; sb-abc-auth-token.0=x; sb-abc-auth-token.1=y",
        );
        assert_eq!(status(Method::POST, &[ssr]), Some(403));
    }
}
