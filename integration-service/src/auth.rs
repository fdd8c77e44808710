//! Who is calling: the Supabase session JWT, wherever the browser or a service put it.
//!
//! Sources, first match wins: `authorization: Bearer <jwt>`, the `sb-access-token` cookie, the
//! @supabase/ssr `sb-<ref>-auth-token` cookie (JSON or `base64-`-prefixed JSON holding
//! `access_token`, possibly split into `.0`, `.1`, ... chunks). The JWT is HS256 with
//! `SUPABASE_JWT_SECRET`.
//!
//! Only sessions as Supabase issues them pass, because the main application may sign other
//! HS256 tokens with the same secret: `exp`, `nbf` and `iat` are checked (30 s leeway); a user
//! needs `role: "authenticated"`, `aud` containing `"authenticated"` (a string or an array, as
//! RFC 7519 allows) and a UUID `sub`; `role: "service_role"` (Supabase's service key) is an
//! internal caller and nothing else; with `SUPABASE_URL` configured a user token's `iss` must
//! be `{SUPABASE_URL}/auth/v1`.

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::ServiceError;

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

/// Credentials as the gateway forwards them (or a gRPC client sends them).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub token: Option<String>,
    /// `x-organization-id`, else the `org_id` cookie.
    pub requested_organization: Option<String>,
    /// An `Authorization` header was sent that is not a non-empty `Bearer` (`Basic ...`, an
    /// empty bearer): refused, never replaced by a session cookie — a cross-site request
    /// carrying one must not ride on the cookie.
    pub unusable_authorization: bool,
}

impl Credentials {
    /// The session token to verify: 401 when there is none, or when the `Authorization`
    /// header sent is not a usable bearer.
    pub fn session_token(&self) -> Result<&str, ServiceError> {
        if self.unusable_authorization {
            return Err(ServiceError::unauthenticated("Authentication required")
                .with_details("the Authorization header must be a Bearer session token"));
        }
        self.token
            .as_deref()
            .ok_or_else(|| ServiceError::unauthenticated("Authentication required"))
    }
}

/// The session token is a bearer credential: `Debug` says whether there is one, never what.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("requested_organization", &self.requested_organization)
            .field("unusable_authorization", &self.unusable_authorization)
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User(Uuid),
    /// Supabase's service key: may act on any organization.
    Service,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(aud) => aud == wanted,
            Self::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

impl From<&str> for Audience {
    fn from(aud: &str) -> Self {
        Self::One(aud.to_string())
    }
}

/// The role and audience of a Supabase user session.
pub const USER_ROLE: &str = "authenticated";
/// The role of Supabase's service key.
pub const SERVICE_ROLE: &str = "service_role";

/// Verifies session JWTs with the configured HS256 secret.
#[derive(Clone)]
pub struct SessionVerifier {
    key: DecodingKey,
    validation: Validation,
    /// `{SUPABASE_URL}/auth/v1` when `SUPABASE_URL` is configured.
    issuer: Option<String>,
}

impl SessionVerifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        // The audience is checked below, where a service key (which has none) is told apart.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            issuer: None,
        }
    }

    /// Requires user tokens to come from this issuer (`{SUPABASE_URL}/auth/v1`).
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ServiceError> {
        let refused = |why: &str| {
            ServiceError::unauthenticated("Invalid or expired session").with_details(why)
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                refused(match e.kind() {
                    ErrorKind::ExpiredSignature => "the session has expired",
                    ErrorKind::ImmatureSignature => "the session is not valid yet",
                    ErrorKind::InvalidSignature => "the session signature is not valid",
                    ErrorKind::InvalidAlgorithm => "the session must be signed with HS256",
                    _ => "the session token is malformed",
                })
            })?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECONDS as i64))
        {
            return Err(refused("the session was issued in the future"));
        }
        match claims.role.as_deref() {
            Some(SERVICE_ROLE) => return Ok(Caller::Service),
            Some(USER_ROLE) => {}
            _ => return Err(refused("the session is not a user session")),
        }
        if !claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(USER_ROLE))
        {
            return Err(refused("the session is not meant for this application"));
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(refused("the session was issued by another project"));
            }
        }
        let sub = claims.sub.as_deref().unwrap_or_default();
        let user = Uuid::parse_str(sub).map_err(|_| refused("the session has no user id"))?;
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
    let authorization = metadata.get("authorization");
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let requested_organization = metadata
        .get("x-organization-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .or_else(|| cookie(&cookies, "org_id").map(str::to_string));
    Credentials {
        unusable_authorization: authorization.is_some() && bearer.is_none(),
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
fn session_from_cookies(cookies: &[(String, String)]) -> Option<String> {
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
fn access_token_from_ssr_value(value: &str) -> Option<String> {
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
    use proptest::prelude::Strategy;

    use super::*;

    const SECRET: &str = "test-secret-with-enough-length-000000";

    fn token(claims: &Claims, secret: &str) -> String {
        sign_session(secret, claims).unwrap()
    }

    fn user_claims(user: &Uuid) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: Some(user.to_string()),
            exp: now + 600,
            iat: Some(now),
            role: Some(USER_ROLE.into()),
            aud: Some("authenticated".into()),
            ..Claims::default()
        }
    }

    fn refused(verifier: &SessionVerifier, claims: &Claims) -> bool {
        matches!(
            verifier.verify(&token(claims, SECRET)),
            Err(ServiceError::Unauthenticated(_))
        )
    }

    #[test]
    fn verifies_user_and_service_tokens() {
        let user = Uuid::new_v4();
        let verifier = SessionVerifier::new(SECRET);
        let t = token(&user_claims(&user), SECRET);
        assert_eq!(verifier.verify(&t).unwrap(), Caller::User(user));
        let array_aud = Claims {
            aud: Some(Audience::Many(vec!["other".into(), "authenticated".into()])),
            ..user_claims(&user)
        };
        let t = token(&array_aud, SECRET);
        assert_eq!(verifier.verify(&t).unwrap(), Caller::User(user));
        // Supabase's service key: no sub, no aud, iss "supabase".
        let service = Claims {
            sub: None,
            aud: None,
            role: Some(SERVICE_ROLE.into()),
            iss: Some("supabase".into()),
            ..user_claims(&user)
        };
        let t = token(&service, SECRET);
        assert_eq!(verifier.verify(&t).unwrap(), Caller::Service);
    }

    #[test]
    fn time_claims_are_enforced_with_leeway() {
        let user = Uuid::new_v4();
        let verifier = SessionVerifier::new(SECRET);
        let now = chrono::Utc::now().timestamp();
        let base = || user_claims(&user);
        assert!(refused(
            &verifier,
            &Claims {
                exp: now - 120,
                ..base()
            }
        ));
        assert!(!refused(
            &verifier,
            &Claims {
                exp: now - 10,
                ..base()
            }
        ));
        assert!(refused(
            &verifier,
            &Claims {
                nbf: Some(now + 120),
                ..base()
            }
        ));
        assert!(!refused(
            &verifier,
            &Claims {
                nbf: Some(now + 10),
                ..base()
            }
        ));
        assert!(refused(
            &verifier,
            &Claims {
                iat: Some(now + 120),
                ..base()
            }
        ));
        assert!(!refused(
            &verifier,
            &Claims {
                iat: Some(now + 10),
                ..base()
            }
        ));
        assert!(refused(
            &verifier,
            &Claims {
                exp: i64::MIN,
                ..base()
            }
        ));
        assert!(!refused(
            &verifier,
            &Claims {
                iat: Some(i64::MIN),
                ..base()
            }
        ));
        assert!(refused(
            &verifier,
            &Claims {
                iat: Some(i64::MAX),
                ..base()
            }
        ));
    }

    #[test]
    fn only_authenticated_users_of_this_audience_pass() {
        let user = Uuid::new_v4();
        let verifier = SessionVerifier::new(SECRET);
        let base = || user_claims(&user);
        for claims in [
            Claims {
                role: Some("anon".into()),
                ..base()
            },
            Claims {
                role: None,
                ..base()
            },
            Claims {
                role: Some("Authenticated".into()),
                ..base()
            },
            Claims {
                aud: None,
                ..base()
            },
            Claims {
                aud: Some("anon".into()),
                ..base()
            },
            Claims {
                aud: Some(Audience::Many(vec![])),
                ..base()
            },
            Claims {
                aud: Some(Audience::Many(vec!["x".into()])),
                ..base()
            },
            Claims {
                sub: None,
                ..base()
            },
            Claims {
                sub: Some("not-a-uuid".into()),
                ..base()
            },
        ] {
            assert!(refused(&verifier, &claims), "{claims:?}");
        }
        assert!(matches!(
            verifier.verify(&token(&base(), "another-secret")),
            Err(ServiceError::Unauthenticated(_))
        ));
        assert!(verifier.verify("not.a.jwt").is_err());
    }

    #[test]
    fn the_issuer_is_checked_when_configured() {
        let user = Uuid::new_v4();
        let issuer = "https://abc.supabase.co/auth/v1";
        let verifier = SessionVerifier::new(SECRET).with_issuer(Some(issuer.into()));
        assert!(refused(&verifier, &user_claims(&user)));
        let foreign = Claims {
            iss: Some("https://other.supabase.co/auth/v1".into()),
            ..user_claims(&user)
        };
        assert!(refused(&verifier, &foreign));
        let ours = Claims {
            iss: Some(issuer.into()),
            ..user_claims(&user)
        };
        assert!(!refused(&verifier, &ours));
        // The service key's issuer is "supabase": a service caller is not a user session.
        let service = Claims {
            role: Some(SERVICE_ROLE.into()),
            iss: Some("supabase".into()),
            ..user_claims(&user)
        };
        assert!(!refused(&verifier, &service));
    }

    proptest::proptest! {
        #[test]
        fn any_claims_json_is_verified_or_cleanly_refused(
            claims in proptest::collection::hash_map(
                "sub|exp|nbf|iat|role|aud|iss|x",
                proptest::prop_oneof![
                    proptest::prelude::any::<i64>().prop_map(serde_json::Value::from),
                    proptest::prelude::any::<f64>().prop_map(serde_json::Value::from),
                    "\\PC{0,20}".prop_map(serde_json::Value::from),
                    proptest::prelude::Just(serde_json::json!(["authenticated", 1])),
                    proptest::prelude::Just(serde_json::Value::Null),
                ],
                0..8,
            )
        ) {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap());
            let message = format!("{header}.{payload}");
            let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &key,
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap();
            let verifier = SessionVerifier::new(SECRET);
            match verifier.verify(&format!("{message}.{signature}")) {
                Ok(_) | Err(ServiceError::Unauthenticated(_)) => {}
                Err(other) => proptest::prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn cookie_and_chunk_parsing_never_panic(header in "\\PC{0,300}") {
            let cookies = parse_cookie_header(&header);
            let _ = session_from_cookies(&cookies);
            let _ = access_token_from_ssr_value(&header);
        }

        #[test]
        fn chunked_ssr_cookies_reassemble_in_any_order(
            token in "[A-Za-z0-9._-]{1,200}",
            cut in 1usize..40,
            reverse in proptest::prelude::any::<bool>(),
        ) {
            let json = serde_json::json!({"access_token": token}).to_string();
            let value = format!(
                "base64-{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
            );
            let mut chunks: Vec<String> = value
                .as_bytes()
                .chunks(cut)
                .enumerate()
                .map(|(i, c)| format!("sb-ref-auth-token.{i}={}", std::str::from_utf8(c).unwrap()))
                .collect();
            if reverse {
                chunks.reverse();
            }
            let cookies = parse_cookie_header(&chunks.join("; "));
            proptest::prop_assert_eq!(session_from_cookies(&cookies), Some(token));
        }
    }

    #[test]
    fn debug_never_shows_the_session() {
        let creds = Credentials {
            token: Some("eyJ.secret.sig".into()),
            requested_organization: Some("2".into()),
            unusable_authorization: false,
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("[redacted]"));
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

    /// A `Basic` or empty-bearer `Authorization` never falls back to the session cookie: a
    /// cross-site request carrying one would otherwise ride on the cookie.
    #[test]
    fn an_unusable_authorization_header_is_refused_not_replaced_by_the_cookie() {
        for value in ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "Token abc", ""] {
            let mut md = MetadataMap::new();
            md.insert("authorization", value.parse().unwrap());
            md.insert("cookie", "sb-access-token=def".parse().unwrap());
            let creds = credentials_from_metadata(&md);
            assert!(creds.unusable_authorization, "{value:?}");
            let err = creds.session_token().unwrap_err();
            assert!(matches!(err, ServiceError::Unauthenticated(_)), "{value:?}");
        }
        let mut md = MetadataMap::new();
        md.insert("cookie", "sb-access-token=def".parse().unwrap());
        assert_eq!(
            credentials_from_metadata(&md).session_token().unwrap(),
            "def"
        );
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
