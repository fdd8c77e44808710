//! Who is calling: the Supabase session JWT, wherever the browser or a service put it.
//!
//! Sources, first match wins: `authorization: Bearer <jwt>`, the `sb-access-token` cookie, the
//! @supabase/ssr `sb-<ref>-auth-token` cookie (JSON or `base64-`-prefixed JSON holding
//! `access_token`, possibly split into `.0`, `.1`, ... chunks). The JWT is HS256 with
//! `SUPABASE_JWT_SECRET`; `exp` is enforced; `role: service_role` marks an internal caller.

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::{Problem, ServiceError};

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

/// Credentials as the gateway forwards them (or a gRPC client sends them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    /// `x-organization-id`, else the `org_id` cookie.
    pub requested_organization: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User(Uuid),
    /// Supabase's service key: may act on any organization.
    Service,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Verifies session JWTs with the configured HS256 secret.
#[derive(Clone)]
pub struct SessionVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl SessionVerifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ServiceError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the session has expired",
                    ErrorKind::InvalidSignature => "the session signature is not valid",
                    ErrorKind::InvalidAlgorithm => "the session must be signed with HS256",
                    _ => "the session token is malformed",
                };
                ServiceError::Unauthenticated(
                    Problem::new("Invalid or expired session").details(why),
                )
            })?;
        let claims = data.claims;
        if claims.role.as_deref() == Some("service_role") {
            return Ok(Caller::Service);
        }
        let sub = claims.sub.as_deref().unwrap_or_default();
        let user = Uuid::parse_str(sub).map_err(|_| {
            ServiceError::Unauthenticated(
                Problem::new("Invalid or expired session").details("the session has no user id"),
            )
        })?;
        Ok(Caller::User(user))
    }
}

/// Signs a session JWT (development tokens and tests).
pub fn sign_session(secret: &str, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Reads the forwarded credentials from gRPC metadata.
pub fn credentials_from_metadata(metadata: &MetadataMap) -> Credentials {
    let cookies: Vec<(String, String)> = metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_cookie_header)
        .collect();
    let bearer = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let requested_organization = metadata
        .get("x-organization-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .or_else(|| cookie(&cookies, "org_id").map(str::to_string));
    Credentials {
        token: bearer.or_else(|| session_from_cookies(&cookies)),
        requested_organization,
    }
}

fn bearer_token(header: &str) -> Option<String> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// Splits a `Cookie` header into (name, value) pairs.
pub fn parse_cookie_header(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let value = value.trim().trim_matches('"');
            Some((name.trim().to_string(), value.to_string()))
        })
        .collect()
}

fn cookie<'a>(cookies: &'a [(String, String)], name: &str) -> Option<&'a str> {
    cookies
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The session JWT from `sb-access-token` or the @supabase/ssr auth cookie.
pub fn session_from_cookies(cookies: &[(String, String)]) -> Option<String> {
    if let Some(token) = cookie(cookies, "sb-access-token").filter(|v| !v.is_empty()) {
        return Some(percent_decode(token));
    }
    let base = cookies
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| n.starts_with("sb-"))
        .find_map(|n| {
            let stem = n.split_once(".").map_or(n, |(stem, _)| stem);
            stem.ends_with("-auth-token").then_some(stem)
        })?;
    let value = match cookie(cookies, base) {
        Some(whole) => whole.to_string(),
        // Chunks `.0`, `.1`, ... joined in order until one is missing.
        None => (0..)
            .map_while(|i| cookie(cookies, &format!("{base}.{i}")))
            .collect::<String>(),
    };
    access_token_from_ssr_value(&value)
}

/// Decodes an @supabase/ssr cookie value: `base64-<base64url JSON>` or (URL-encoded) JSON,
/// an object with `access_token` or the legacy array form `[access_token, refresh_token, ...]`.
pub fn access_token_from_ssr_value(value: &str) -> Option<String> {
    let decoded = percent_decode(value);
    let json_text = match decoded.strip_prefix("base64-") {
        Some(encoded) => {
            let encoded = encoded.trim_end_matches('=');
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
                .ok()?;
            String::from_utf8(bytes).ok()?
        }
        None => decoded,
    };
    match serde_json::from_str::<serde_json::Value>(&json_text).ok()? {
        serde_json::Value::Object(map) => map
            .get("access_token")
            .and_then(|t| t.as_str())
            .map(str::to_string),
        serde_json::Value::Array(items) => {
            items.first().and_then(|t| t.as_str()).map(str::to_string)
        }
        serde_json::Value::String(token) => Some(token),
        _ => None,
    }
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-secret-with-enough-length-000000";

    fn token(claims: &Claims, secret: &str) -> String {
        sign_session(secret, claims).unwrap()
    }

    fn claims(sub: Option<&str>, exp_from_now: i64, role: Option<&str>) -> Claims {
        Claims {
            sub: sub.map(str::to_string),
            exp: chrono::Utc::now().timestamp() + exp_from_now,
            iat: None,
            role: role.map(str::to_string),
            aud: Some("authenticated".into()),
        }
    }

    #[test]
    fn verifies_user_and_service_tokens() {
        let user = Uuid::new_v4();
        let verifier = SessionVerifier::new(SECRET);
        let t = token(
            &claims(Some(&user.to_string()), 600, Some("authenticated")),
            SECRET,
        );
        assert_eq!(verifier.verify(&t).unwrap(), Caller::User(user));
        let t = token(&claims(None, 600, Some("service_role")), SECRET);
        assert_eq!(verifier.verify(&t).unwrap(), Caller::Service);
    }

    #[test]
    fn refuses_expired_foreign_and_userless_tokens() {
        let verifier = SessionVerifier::new(SECRET);
        let user = Uuid::new_v4().to_string();
        for t in [
            token(&claims(Some(&user), -120, None), SECRET),
            token(&claims(Some(&user), 600, None), "another-secret"),
            token(&claims(None, 600, Some("authenticated")), SECRET),
            "not.a.jwt".to_string(),
        ] {
            assert!(matches!(
                verifier.verify(&t),
                Err(ServiceError::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn bearer_header_wins() {
        let mut md = MetadataMap::new();
        md.insert("authorization", "Bearer abc".parse().unwrap());
        md.insert("cookie", "sb-access-token=def; org_id=7".parse().unwrap());
        let creds = credentials_from_metadata(&md);
        assert_eq!(creds.token.as_deref(), Some("abc"));
        assert_eq!(creds.requested_organization.as_deref(), Some("7"));
    }

    #[test]
    fn organization_header_wins_over_cookie() {
        let mut md = MetadataMap::new();
        md.insert("x-organization-id", "3".parse().unwrap());
        md.insert("cookie", "org_id=7".parse().unwrap());
        assert_eq!(
            credentials_from_metadata(&md)
                .requested_organization
                .as_deref(),
            Some("3")
        );
    }

    #[test]
    fn ssr_cookie_json_base64_and_chunks() {
        let json = r#"{"access_token":"jwt-value","refresh_token":"r"}"#;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let cookies = parse_cookie_header(&format!("sb-abc-auth-token=base64-{encoded}"));
        assert_eq!(session_from_cookies(&cookies).as_deref(), Some("jwt-value"));

        let url_encoded =
            percent_encoding::utf8_percent_encode(json, percent_encoding::NON_ALPHANUMERIC);
        let cookies = parse_cookie_header(&format!("sb-abc-auth-token={url_encoded}"));
        assert_eq!(session_from_cookies(&cookies).as_deref(), Some("jwt-value"));

        let whole = format!("base64-{encoded}");
        let (a, b) = whole.split_at(10);
        let cookies = parse_cookie_header(&format!(
            "sb-abc-auth-token-code-verifier=x; sb-abc-auth-token.1={b}; sb-abc-auth-token.0={a}"
        ));
        assert_eq!(session_from_cookies(&cookies).as_deref(), Some("jwt-value"));
    }

    #[test]
    fn legacy_array_form_and_garbage() {
        assert_eq!(
            access_token_from_ssr_value(r#"["t1","r1",null]"#).as_deref(),
            Some("t1")
        );
        assert_eq!(access_token_from_ssr_value("base64-!!!"), None);
        assert_eq!(access_token_from_ssr_value("{}"), None);
    }
}
