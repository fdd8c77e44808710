//! The OAuth `state` parameter: AES-256-GCM under a key derived for this purpose only
//! (`keyring.derive_key("oauth-state")`), so it is both secret and unforgeable.
//!
//! It carries the provider, organization, user, integration, a random nonce (the primary key
//! of the `oauth_states` row that makes it single use), the issue time (10-minute expiry) and
//! the SHA-256 of the browser-binding cookie, when binding is on.

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Aes256Gcm, Nonce,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::crypto::Keyring;

/// Purpose of the derived key.
const STATE_KEY_PURPOSE: &str = "oauth-state";
/// How long a state may wait for its callback.
pub const STATE_LIFETIME_SECS: i64 = 600;
const STATE_AAD: &[u8] = b"integrations/oauth-state/v1";
const NONCE_LEN: usize = 12;
/// Longest state accepted for decryption; ours are about 300 characters.
const MAX_STATE_LEN: usize = 2048;

/// What a state says. Field names are short: the state travels in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    #[serde(rename = "p")]
    pub provider: String,
    #[serde(rename = "o")]
    pub organization_id: i64,
    #[serde(rename = "u")]
    pub user_id: Option<Uuid>,
    #[serde(rename = "i")]
    pub integration_id: Uuid,
    #[serde(rename = "n")]
    pub nonce: String,
    /// Unix seconds of issue.
    #[serde(rename = "t")]
    pub issued_at: i64,
    /// Hex SHA-256 of the binding cookie's value.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// Frontend callback mode: only a session of `user_id` may complete this state.
    #[serde(rename = "s", default, skip_serializing_if = "std::ops::Not::not")]
    pub session_bound: bool,
}

/// Why a state is refused; all of them end as `error=invalid_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state missing")]
    Missing,
    #[error("state forged or corrupted")]
    Forged,
    #[error("state expired")]
    Expired,
    #[error("state issued for another provider")]
    WrongProvider,
    #[error("state not bound to this browser")]
    Unbound,
    #[error("state already used or unknown")]
    Consumed,
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a binding cookie value, as stored in the claims.
pub fn binding_hash(cookie_value: &str) -> String {
    hex::encode(Sha256::digest(cookie_value.as_bytes()))
}

/// Seals claims into a state string.
pub fn seal(keyring: &Keyring, claims: &StateClaims) -> String {
    let cipher = Aes256Gcm::new(&keyring.derive_key(STATE_KEY_PURPOSE).into());
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let plaintext = serde_json::to_vec(claims).unwrap_or_default();
    // AES-GCM fails only for messages over 64 GiB.
    #[allow(clippy::expect_used)]
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: STATE_AAD,
            },
        )
        .expect("AES-GCM encryption of a short state");
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Opens a state sealed under the current or a previous key.
pub fn open(keyring: &Keyring, state: &str) -> Result<StateClaims, StateError> {
    if state.is_empty() {
        return Err(StateError::Missing);
    }
    if state.len() > MAX_STATE_LEN {
        return Err(StateError::Forged);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(state)
        .map_err(|_| StateError::Forged)?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(StateError::Forged);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| StateError::Forged)?;
    for key in keyring.derived_keys(STATE_KEY_PURPOSE) {
        let cipher = Aes256Gcm::new(&key.into());
        if let Ok(plain) = cipher.decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: STATE_AAD,
            },
        ) {
            return serde_json::from_slice(&plain).map_err(|_| StateError::Forged);
        }
    }
    Err(StateError::Forged)
}

/// The checks that need no database: provider, age, browser binding, and for a
/// session-bound state the user completing it (`completed_by`, the verified session's user).
pub fn verify(
    claims: &StateClaims,
    provider: &str,
    now_unix: i64,
    cookie_value: Option<&str>,
    completed_by: Option<Uuid>,
) -> Result<(), StateError> {
    if claims.provider != provider {
        return Err(StateError::WrongProvider);
    }
    let age = now_unix - claims.issued_at;
    if !(-60..=STATE_LIFETIME_SECS).contains(&age) {
        return Err(StateError::Expired);
    }
    if let Some(expected) = &claims.binding {
        let presented = cookie_value.map(binding_hash).ok_or(StateError::Unbound)?;
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(StateError::Unbound);
        }
    }
    if claims.session_bound && (claims.user_id.is_none() || completed_by != claims.user_id) {
        return Err(StateError::Unbound);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncryptionKey;

    fn claims(binding: Option<String>) -> StateClaims {
        StateClaims {
            provider: "github".into(),
            organization_id: 7,
            user_id: Some(Uuid::new_v4()),
            integration_id: Uuid::new_v4(),
            nonce: random_token(16),
            issued_at: 1_000_000,
            binding,
            session_bound: false,
        }
    }

    #[test]
    fn round_trip_and_previous_keys() {
        let ring = Keyring::new(&EncryptionKey([1; 32]), &[]);
        let c = claims(None);
        let state = seal(&ring, &c);
        assert_eq!(open(&ring, &state).unwrap(), c);
        let rotated = Keyring::new(&EncryptionKey([2; 32]), &[EncryptionKey([1; 32])]);
        assert_eq!(open(&rotated, &state).unwrap(), c);
        let other = Keyring::new(&EncryptionKey([2; 32]), &[]);
        assert_eq!(open(&other, &state), Err(StateError::Forged));
    }

    #[test]
    fn tampered_states_are_forged() {
        let ring = Keyring::new(&EncryptionKey([1; 32]), &[]);
        let state = seal(&ring, &claims(None));
        let mut bytes = URL_SAFE_NO_PAD.decode(&state).unwrap();
        bytes[20] ^= 1;
        assert_eq!(
            open(&ring, &URL_SAFE_NO_PAD.encode(bytes)),
            Err(StateError::Forged)
        );
        assert_eq!(open(&ring, "not-a-state"), Err(StateError::Forged));
        assert_eq!(open(&ring, ""), Err(StateError::Missing));
    }

    #[test]
    fn provider_age_and_binding_are_checked() {
        let c = claims(Some(binding_hash("cookie-value")));
        assert_eq!(
            verify(&c, "github", 1_000_010, Some("cookie-value"), None),
            Ok(())
        );
        assert_eq!(
            verify(&c, "slack", 1_000_010, Some("cookie-value"), None),
            Err(StateError::WrongProvider)
        );
        assert_eq!(
            verify(&c, "github", 1_000_601, Some("cookie-value"), None),
            Err(StateError::Expired)
        );
        assert_eq!(
            verify(&c, "github", 1_000_010, None, None),
            Err(StateError::Unbound)
        );
        assert_eq!(
            verify(&c, "github", 1_000_010, Some("other"), None),
            Err(StateError::Unbound)
        );
        assert_eq!(
            verify(&claims(None), "github", 1_000_010, None, None),
            Ok(())
        );
    }

    #[test]
    fn a_session_bound_state_is_completed_only_by_its_user() {
        let mut c = claims(None);
        c.session_bound = true;
        let user = c.user_id;
        assert_eq!(verify(&c, "github", 1_000_010, None, user), Ok(()));
        assert_eq!(
            verify(&c, "github", 1_000_010, None, Some(Uuid::new_v4())),
            Err(StateError::Unbound)
        );
        assert_eq!(
            verify(&c, "github", 1_000_010, None, None),
            Err(StateError::Unbound)
        );
        // The flag survives sealing; states sealed before it existed read as unbound to a session.
        let ring = Keyring::new(&EncryptionKey([1; 32]), &[]);
        assert!(open(&ring, &seal(&ring, &c)).unwrap().session_bound);
        assert!(
            !open(&ring, &seal(&ring, &claims(None)))
                .unwrap()
                .session_bound
        );
        c.user_id = None;
        assert_eq!(
            verify(&c, "github", 1_000_010, None, None),
            Err(StateError::Unbound)
        );
    }
}
