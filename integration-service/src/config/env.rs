//! Reading variables: the source (`Vars`: the process, or a map in tests), `Env` with the
//! parsers every group shares, and the error constructors that name the variable.

use std::{collections::HashMap, time::Duration};

use url::Url;

use super::{ConfigError, EncryptionKey};

/// Reads variables by name; `std::env::var` in production, a map in tests.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
    /// Every (name, value) pair, to capture provider variables by prefix.
    fn all(&self) -> Vec<(String, String)>;
}

/// The process environment (after `.env` was loaded).
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn all(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
    fn all(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Non-empty variables, with the parsers every group shares.
pub(super) struct Env<'a>(pub(super) &'a dyn Vars);

impl Env<'_> {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.trim().is_empty())
    }

    /// `on`/`off` (also `true`/`false`, `1`/`0`).
    pub(super) fn switch(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("on" | "true" | "1") => Ok(true),
            Some("off" | "false" | "0") => Ok(false),
            Some(other) => Err(invalid(name, &format!("expected on or off, got {other:?}"))),
        }
    }

    pub(super) fn number(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(name, &format!("expected a whole number, got {text:?}"))),
        }
    }

    /// A whole number in `1..=max`.
    pub(super) fn positive(&self, name: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
        match self.number(name, default)? {
            n if (1..=max).contains(&n) => Ok(n),
            n => Err(invalid(
                name,
                &format!("expected a whole number from 1 to {max}, got {n}"),
            )),
        }
    }

    /// Seconds, where 0 turns the feature off.
    pub(super) fn optional_secs(
        &self,
        name: &str,
        default: u64,
    ) -> Result<Option<Duration>, ConfigError> {
        Ok(match self.number(name, default)? {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        })
    }
}

pub(super) fn invalid(variable: &str, why: &str) -> ConfigError {
    ConfigError::Invalid {
        variable: variable.into(),
        why: why.into(),
    }
}

pub(super) fn parse_key(variable: &str, hex_key: &str) -> Result<EncryptionKey, ConfigError> {
    let bytes = hex::decode(hex_key.trim())
        .map_err(|_| invalid(variable, "expected 64 hex characters (32 bytes)"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid(variable, "expected 64 hex characters (32 bytes)"))?;
    Ok(EncryptionKey(key))
}

pub(super) fn parse_url(variable: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim_end_matches('/'))
        .map_err(|e| invalid(variable, &format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(variable, "expected an http or https URL"));
    }
    Ok(url)
}
