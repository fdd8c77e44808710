//! Cross-site request forgery defence of the console's form posts: a post changes something
//! only when the browser says it comes from the gateway's own origin (`Origin` equal to
//! `PUBLIC_API_URL`'s, or `Sec-Fetch-Site: same-origin`) AND it carries the session's
//! anti-forgery token.
//!
//! The token is stateless: an HMAC-SHA256, under the gateway's form key, of the credential
//! the request authenticates with (its `Authorization` header, else its `sb-*` session
//! cookies). Another site can neither read it (the console's pages are same-origin, never
//! framed) nor compute it (it lacks the key), and it changes with the session, so a token
//! seen by one user is worthless with another user's cookie.

use hmac::{Hmac, Mac};
use http::{header, HeaderMap};
use sha2::Sha256;

use crate::upstream::forwarded_cookies;

/// Domain separation of the form token's HMAC input.
const TOKEN_CONTEXT: &[u8] = b"integrations-console-form-v1\0";

/// Name of the hidden field carrying the token in every console form.
pub(crate) const TOKEN_FIELD: &str = "_token";

/// The key of the anti-forgery tokens.
#[derive(Clone)]
pub struct FormKey([u8; 32]);

impl FormKey {
    /// `configured` (`CONSOLE_FORM_KEY`), else a key drawn for this process.
    pub fn new(configured: Option<[u8; 32]>) -> Self {
        Self(configured.unwrap_or_else(|| {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            key
        }))
    }

    fn mac(&self, headers: &HeaderMap) -> Hmac<Sha256> {
        // A 32-byte key is always accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(TOKEN_CONTEXT);
        mac.update(&session_credential(headers));
        mac
    }

    /// The token of the request's session, as the forms carry it (hex).
    pub fn token(&self, headers: &HeaderMap) -> String {
        hex::encode(self.mac(headers).finalize().into_bytes())
    }

    /// Whether `token` is the request's session token (constant-time).
    pub fn verify(&self, headers: &HeaderMap, token: &str) -> bool {
        match hex::decode(token.trim()) {
            Ok(bytes) => self.mac(headers).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// The bytes that identify the session: the bearer credential, else every `sb-*` cookie in
/// the order sent. Empty without a session (its token then protects nothing the service would
/// accept anyway).
fn session_credential(headers: &HeaderMap) -> Vec<u8> {
    let mut credential = Vec::new();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        credential.extend_from_slice(b"authorization\0");
        credential.extend_from_slice(value.as_bytes());
        return credential;
    }
    for (name, value) in forwarded_cookies(headers) {
        if name.starts_with(b"sb-") {
            credential.extend_from_slice(name);
            credential.push(b'=');
            credential.extend_from_slice(value);
            credential.push(0);
        }
    }
    credential
}

/// Whether the browser says the post comes from the gateway's own origin: `Origin` equal to
/// `public_origin` (ASCII serialization of `PUBLIC_API_URL`'s origin), or
/// `Sec-Fetch-Site: same-origin`. A request saying neither is refused: every browser sends
/// `Origin` with a form post, so only a forged or scripted request lacks both.
pub(crate) fn is_same_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    let fetch_site_same = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("same-origin"));
    let origin_same = headers
        .get(header::ORIGIN)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(public_origin.as_bytes()));
    fetch_site_same || origin_same
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens_are_bound_to_the_session_and_the_key() {
        let key = FormKey::new(Some([7; 32]));
        let alice = headers(&[("cookie", "sb-access-token=alice; org_id=1")]);
        let alice_other_org = headers(&[("cookie", "org_id=2; theme=x; sb-access-token=alice")]);
        let bob = headers(&[("cookie", "sb-access-token=bob")]);
        let bearer = headers(&[("authorization", "Bearer alice")]);
        let token = key.token(&alice);
        assert_eq!(token.len(), 64);
        assert!(key.verify(&alice, &token));
        assert!(key.verify(&alice_other_org, &token));
        assert!(!key.verify(&bob, &token));
        assert!(!key.verify(&bearer, &token));
        assert!(!key.verify(&alice, &token[..62]));
        assert!(!key.verify(&alice, "not hex"));
        assert!(!key.verify(&alice, ""));
        assert!(!FormKey::new(Some([8; 32])).verify(&alice, &token));
        assert_ne!(
            FormKey::new(None).token(&alice),
            FormKey::new(None).token(&alice)
        );
    }

    #[test]
    fn only_the_gateways_origin_is_same_origin() {
        let origin = "http://127.0.0.1:8080";
        assert!(is_same_origin(
            &headers(&[("origin", "http://127.0.0.1:8080")]),
            origin
        ));
        assert!(is_same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            origin
        ));
        for refused in [
            headers(&[]),
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:8080.evil.example")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ]),
        ] {
            assert!(!is_same_origin(&refused, origin), "{refused:?}");
        }
    }
}
