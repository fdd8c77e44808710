//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value, associated data binding
//! each ciphertext to its row and column (a value copied to another row or column does not
//! decrypt), and the key id inside each stored value so keys can rotate.
//!
//! Stored form: `v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id is the first
//! 8 hex digits of SHA-256 over the key. `INTEGRATION_ENCRYPTION_KEY` encrypts; keys of
//! `INTEGRATION_ENCRYPTION_KEY_PREVIOUS` still decrypt. Errors never include plaintext.

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Aes256Gcm, Nonce,
};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::EncryptionKey;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the stored secret is not in the expected format")]
    Malformed,
    #[error("the stored secret was encrypted with an unknown key (id {0}); configure it in INTEGRATION_ENCRYPTION_KEY_PREVIOUS")]
    UnknownKey(String),
    #[error("the stored secret failed authentication: tampered, moved, or the wrong key")]
    Tampered,
}

/// What a ciphertext is bound to: one column of one row.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub table: &'a str,
    pub row: &'a str,
    pub column: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!("integrations/{}/{}/{}", self.table, self.row, self.column).into_bytes()
    }
}

struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
    raw: [u8; 32],
}

impl KeyEntry {
    fn new(key: &EncryptionKey) -> Self {
        let digest = Sha256::digest(key.0);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: Aes256Gcm::new(&key.0.into()),
            raw: key.0,
        }
    }
}

/// The current key and the previous ones still accepted for decryption.
pub struct Keyring {
    current: KeyEntry,
    previous: Vec<KeyEntry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    pub fn new(current: &EncryptionKey, previous: &[EncryptionKey]) -> Self {
        Self {
            current: KeyEntry::new(current),
            previous: previous.iter().map(KeyEntry::new).collect(),
        }
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts under the current key.
    pub fn encrypt(&self, plaintext: &str, binding: Binding<'_>) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = binding.associated_data();
        // AES-GCM fails only for messages over 64 GiB; secrets are short.
        #[allow(clippy::expect_used)]
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short in-memory secret");
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!(
            "{VERSION}:{}:{}",
            self.current.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Decrypts with whichever configured key the value names.
    pub fn decrypt(&self, stored: &str, binding: Binding<'_>) -> Result<String, CryptoError> {
        let (key_id, bytes) = parse(stored)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let aad = binding.associated_data();
        let plain = key
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Malformed)
    }

    /// Whether a stored value is under a key other than the current one.
    pub fn needs_rotation(&self, stored: &str) -> Result<bool, CryptoError> {
        let (key_id, _) = parse(stored)?;
        Ok(key_id != self.current.id)
    }

    /// A 256-bit key for one purpose only (e.g. `"oauth-state"`), derived from the current
    /// key with HMAC-SHA256 so that no two purposes share key material.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        derive(&self.current.raw, purpose)
    }

    /// The same derivation from every accepted key, current first (to open values made
    /// before a rotation).
    pub fn derived_keys(&self, purpose: &str) -> Vec<[u8; 32]> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| derive(&k.raw, purpose))
            .collect()
    }
}

fn derive(key: &[u8; 32], purpose: &str) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(b"integrations/derive/v1/");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

fn parse(stored: &str) -> Result<(&str, Vec<u8>), CryptoError> {
    let mut parts = stored.splitn(3, ':');
    let (Some(VERSION), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| CryptoError::Malformed)?;
    Ok((key_id, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey([byte; 32])
    }

    const ROW: Binding<'static> = Binding {
        table: "integrations",
        row: "0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        column: "access_token",
    };

    #[test]
    fn round_trip_with_random_nonces() {
        let ring = Keyring::new(&key(1), &[]);
        let a = ring.encrypt("gho_secret", ROW);
        let b = ring.encrypt("gho_secret", ROW);
        assert_ne!(a, b, "nonces are random");
        assert!(!a.contains("gho_secret"));
        assert!(a.starts_with(&format!("v1:{}:", ring.current_key_id())));
        assert_eq!(ring.decrypt(&a, ROW).unwrap(), "gho_secret");
    }

    #[test]
    fn moved_or_tampered_values_do_not_decrypt() {
        let ring = Keyring::new(&key(1), &[]);
        let stored = ring.encrypt("gho_secret", ROW);
        let other_column = Binding {
            column: "refresh_token",
            ..ROW
        };
        assert_eq!(
            ring.decrypt(&stored, other_column),
            Err(CryptoError::Tampered)
        );
        let other_row = Binding {
            row: "another",
            ..ROW
        };
        assert_eq!(ring.decrypt(&stored, other_row), Err(CryptoError::Tampered));
        // Flip one bit of the sealed bytes themselves (editing a base64 character can touch
        // only padding bits and decode to the same bytes).
        let (prefix, body) = stored.rsplit_once(':').unwrap();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        for index in [NONCE_LEN, bytes.len() / 2, bytes.len() - 1] {
            bytes[index] ^= 0x01;
            let tampered = format!(
                "{prefix}:{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)
            );
            assert_eq!(ring.decrypt(&tampered, ROW), Err(CryptoError::Tampered));
            bytes[index] ^= 0x01;
        }
        assert_eq!(ring.decrypt("plaintext", ROW), Err(CryptoError::Malformed));
    }

    #[test]
    fn previous_keys_decrypt_and_unknown_keys_are_named() {
        let old = Keyring::new(&key(1), &[]);
        let stored = old.encrypt("xoxb-token", ROW);
        let rotated = Keyring::new(&key(2), &[key(1)]);
        assert_eq!(rotated.decrypt(&stored, ROW).unwrap(), "xoxb-token");
        assert!(rotated.needs_rotation(&stored).unwrap());
        assert!(!rotated.needs_rotation(&rotated.encrypt("x", ROW)).unwrap());
        let without_old = Keyring::new(&key(2), &[]);
        assert_eq!(
            without_old.decrypt(&stored, ROW),
            Err(CryptoError::UnknownKey(old.current_key_id().to_string()))
        );
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_from_the_key() {
        let ring = Keyring::new(&key(1), &[]);
        assert_ne!(ring.derive_key("oauth-state"), ring.derive_key("other"));
        assert_ne!(ring.derive_key("oauth-state"), [1u8; 32]);
        assert_eq!(
            ring.derived_keys("oauth-state")[0],
            ring.derive_key("oauth-state")
        );
    }
}
