//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value, associated data binding
//! each ciphertext to its row and column (a value copied to another row or column does not
//! decrypt), and the key id inside each stored value so keys can rotate.
//!
//! Stored form: `v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. Values are sealed under
//! a data key derived from `INTEGRATION_ENCRYPTION_KEY` with HKDF-SHA256 (its own label), so
//! the master key itself never encrypts data; values sealed before that change, directly
//! under a master key, keep opening. The key id (first 8 hex digits of SHA-256 over the key
//! that sealed the value) tells the two forms apart; `rotate-keys` moves every value to the
//! current data key. Keys of `INTEGRATION_ENCRYPTION_KEY_PREVIOUS` still open values.
//!
//! Invariant: the table/column binding of every secret column is written here only, in
//! `SecretColumn`; callers name a column and a row, never a string. Opened values are
//! `secrecy::SecretString` (no `Debug`/`Display` of the plaintext); errors never include it.

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Aes256Gcm, Nonce,
};
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::config::EncryptionKey;

pub mod grace;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
/// HKDF `info` of the data-encryption key: no other use of the master key shares it.
const DATA_KEY_LABEL: &[u8] = b"integrations/data-encryption-key/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the stored secret is not in the expected format")]
    Malformed,
    #[error("the stored secret was encrypted with an unknown key (id {0}); configure it in INTEGRATION_ENCRYPTION_KEY_PREVIOUS")]
    UnknownKey(String),
    #[error("the stored secret failed authentication: tampered, moved, or the wrong key")]
    Tampered,
}

/// Every encrypted column, with the table it lives in. The only place that knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretColumn {
    /// `integrations.access_token`
    AccessToken,
    /// `integrations.refresh_token`
    RefreshToken,
    /// `integrations.webhook_secret`
    WebhookSecret,
    /// `integrations.previous_webhook_secret`, the single rotated-out secret of the first
    /// schema: read only to fold it into the grace list before migration 19 drops the column
    /// (`migrate`).
    LegacyPreviousWebhookSecret,
    /// `integrations.webhook_secret_grace`: the rotated-out secrets still verifying, as a
    /// sealed JSON list with their expiries
    WebhookSecretGrace,
    /// `oauth_states.pkce_verifier`
    PkceVerifier,
}

impl SecretColumn {
    /// The encrypted columns of `integrations`, in the order key rotation visits them.
    pub const INTEGRATION: [SecretColumn; 4] = [
        SecretColumn::AccessToken,
        SecretColumn::RefreshToken,
        SecretColumn::WebhookSecret,
        SecretColumn::WebhookSecretGrace,
    ];

    pub fn table(self) -> &'static str {
        match self {
            SecretColumn::PkceVerifier => "oauth_states",
            _ => "integrations",
        }
    }

    pub fn column(self) -> &'static str {
        match self {
            SecretColumn::AccessToken => "access_token",
            SecretColumn::RefreshToken => "refresh_token",
            SecretColumn::WebhookSecret => "webhook_secret",
            SecretColumn::LegacyPreviousWebhookSecret => "previous_webhook_secret",
            SecretColumn::WebhookSecretGrace => "webhook_secret_grace",
            SecretColumn::PkceVerifier => "pkce_verifier",
        }
    }

    fn associated_data(self, row: &str) -> Vec<u8> {
        format!("integrations/{}/{row}/{}", self.table(), self.column()).into_bytes()
    }
}

/// A value sealed for one column of one row, ready to be stored. Only [`Keyring::seal`] makes
/// one, so the store's writes of secret columns take this type and a plaintext cannot reach a
/// ciphertext column by mistake. Its `Debug` shows no ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(String);

impl Sealed {
    /// The stored form (`v1:{key id}:{base64}`).
    pub fn as_stored(&self) -> &str {
        &self.0
    }

    pub fn into_stored(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed([ciphertext])")
    }
}

struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

impl KeyEntry {
    fn new(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: Aes256Gcm::new(key.into()),
        }
    }
}

/// One configured master key: the data key derived from it (seals new values) and the key
/// itself (opens values sealed before data keys existed).
struct MasterKey {
    data: KeyEntry,
    legacy: KeyEntry,
    raw: [u8; 32],
}

impl MasterKey {
    fn new(key: &EncryptionKey) -> Self {
        let mut data = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: this cannot fail.
        hkdf::Hkdf::<Sha256>::new(None, &key.0)
            .expand(DATA_KEY_LABEL, &mut data)
            .unwrap_or_else(|_| unreachable!());
        Self {
            data: KeyEntry::new(&data),
            legacy: KeyEntry::new(&key.0),
            raw: key.0,
        }
    }
}

/// The current key and the previous ones still accepted for decryption.
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.data.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.data.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    pub fn new(current: &EncryptionKey, previous: &[EncryptionKey]) -> Self {
        Self {
            current: MasterKey::new(current),
            previous: previous.iter().map(MasterKey::new).collect(),
        }
    }

    /// The id of the key new values are sealed under (the current data key).
    #[cfg(test)]
    fn current_key_id(&self) -> &str {
        &self.current.data.id
    }

    /// Seals `plaintext` for `column` of `row` under the current data key.
    pub fn seal(
        &self,
        column: SecretColumn,
        row: impl std::fmt::Display,
        plaintext: &str,
    ) -> Sealed {
        Sealed(seal_with(
            &self.current.data,
            &column.associated_data(&row.to_string()),
            plaintext,
        ))
    }

    /// Opens a value of `column` of `row`, under whichever configured key sealed it.
    pub fn open(
        &self,
        column: SecretColumn,
        row: impl std::fmt::Display,
        stored: &str,
    ) -> Result<SecretString, CryptoError> {
        let (key_id, bytes) = parse(stored)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .flat_map(|k| [&k.data, &k.legacy])
            .find(|k| k.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let aad = column.associated_data(&row.to_string());
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
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Malformed)
    }

    /// Whether a stored value is under a key other than the current data key.
    pub fn needs_rotation(&self, stored: &str) -> Result<bool, CryptoError> {
        let (key_id, _) = parse(stored)?;
        Ok(key_id != self.current.data.id)
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

    /// Seals directly under the current master key, as values were sealed before data keys
    /// (tests of the migration path only).
    #[doc(hidden)]
    pub fn seal_legacy(
        &self,
        column: SecretColumn,
        row: impl std::fmt::Display,
        plaintext: &str,
    ) -> Sealed {
        Sealed(seal_with(
            &self.current.legacy,
            &column.associated_data(&row.to_string()),
            plaintext,
        ))
    }
}

fn seal_with(key: &KeyEntry, aad: &[u8], plaintext: &str) -> String {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // AES-GCM fails only for messages over 64 GiB; secrets are short.
    #[allow(clippy::expect_used)]
    let sealed = key
        .cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext.as_bytes(),
                aad,
            },
        )
        .expect("AES-GCM encryption of a short in-memory secret");
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    format!(
        "{VERSION}:{}:{}",
        key.id,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
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
    use secrecy::ExposeSecret;

    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey([byte; 32])
    }

    const ROW: &str = "0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    const COLUMN: SecretColumn = SecretColumn::AccessToken;

    fn open(ring: &Keyring, stored: &str) -> Result<String, CryptoError> {
        ring.open(COLUMN, ROW, stored)
            .map(|s| s.expose_secret().to_string())
    }

    #[test]
    fn round_trip_with_random_nonces() {
        let ring = Keyring::new(&key(1), &[]);
        let a = ring.seal(COLUMN, ROW, "gho_secret").into_stored();
        let b = ring.seal(COLUMN, ROW, "gho_secret").into_stored();
        assert_ne!(a, b, "nonces are random");
        assert!(!a.contains("gho_secret"));
        assert!(a.starts_with(&format!("v1:{}:", ring.current_key_id())));
        assert_eq!(open(&ring, &a).unwrap(), "gho_secret");
    }

    #[test]
    fn moved_or_tampered_values_do_not_decrypt() {
        let ring = Keyring::new(&key(1), &[]);
        let stored = ring.seal(COLUMN, ROW, "gho_secret").into_stored();
        assert_eq!(
            ring.open(SecretColumn::RefreshToken, ROW, &stored).err(),
            Some(CryptoError::Tampered)
        );
        assert_eq!(
            ring.open(COLUMN, "another", &stored).err(),
            Some(CryptoError::Tampered)
        );
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
            assert_eq!(open(&ring, &tampered), Err(CryptoError::Tampered));
            bytes[index] ^= 0x01;
        }
        assert_eq!(open(&ring, "plaintext"), Err(CryptoError::Malformed));
    }

    #[test]
    fn previous_keys_decrypt_and_unknown_keys_are_named() {
        let old = Keyring::new(&key(1), &[]);
        let stored = old.seal(COLUMN, ROW, "xoxb-token").into_stored();
        let rotated = Keyring::new(&key(2), &[key(1)]);
        assert_eq!(open(&rotated, &stored).unwrap(), "xoxb-token");
        assert!(rotated.needs_rotation(&stored).unwrap());
        assert!(!rotated
            .needs_rotation(&rotated.seal(COLUMN, ROW, "x").into_stored())
            .unwrap());
        let without_old = Keyring::new(&key(2), &[]);
        assert_eq!(
            open(&without_old, &stored),
            Err(CryptoError::UnknownKey(old.current_key_id().to_string()))
        );
    }

    #[test]
    fn new_values_use_the_derived_data_key_and_old_ones_still_open() {
        let ring = Keyring::new(&key(1), &[]);
        let legacy = ring.seal_legacy(COLUMN, ROW, "gho_old").into_stored();
        let fresh = ring.seal(COLUMN, ROW, "gho_new").into_stored();
        let legacy_id = legacy.split(':').nth(1).unwrap();
        let fresh_id = fresh.split(':').nth(1).unwrap();
        assert_ne!(legacy_id, fresh_id, "the key id tells the forms apart");
        assert_eq!(fresh_id, ring.current_key_id());
        assert_eq!(legacy_id, hex::encode(&Sha256::digest([1u8; 32])[..4]));
        assert_eq!(open(&ring, &legacy).unwrap(), "gho_old");
        assert!(
            ring.needs_rotation(&legacy).unwrap(),
            "rotate-keys moves it"
        );
        assert!(!ring.needs_rotation(&fresh).unwrap());
        // The data key is not the master key: a cipher under the master key cannot open it.
        let master_only = KeyEntry::new(&[1u8; 32]);
        let (_, bytes) = parse(&fresh).unwrap();
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap();
        assert!(master_only
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &COLUMN.associated_data(ROW)
                }
            )
            .is_err());
    }

    #[test]
    fn every_column_has_its_own_binding() {
        let mut seen = std::collections::HashSet::new();
        for column in SecretColumn::INTEGRATION
            .into_iter()
            .chain([SecretColumn::PkceVerifier])
        {
            assert!(seen.insert(column.associated_data(ROW)));
        }
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
