//! The secrets of the configuration: the encryption keys and the session secret, and the
//! development secrets generated for them (an SQLite database outside production only: once,
//! into the data folder, mode 0600, with a loud warning).

use std::path::{Path, PathBuf};

use rand::RngCore;
use url::Url;

use super::{
    env::{invalid, parse_key, parse_url, Env},
    ConfigError, EncryptionKey, Secret,
};

/// Where development secrets may be generated: only for an SQLite database outside
/// production (`Some(None)` for an in-memory one).
pub(super) fn development_secrets_dir(
    database_url: &str,
    production: bool,
) -> Option<Option<PathBuf>> {
    (database_url.starts_with("sqlite:") && !production).then(|| sqlite_data_dir(database_url))
}

pub(super) fn refuse_generated_why(production: bool) -> &'static str {
    if production {
        "APP_ENV=production never uses a generated development secret"
    } else {
        "a PostgreSQL database never uses a generated development secret"
    }
}

pub(super) struct Keys {
    pub(super) current: EncryptionKey,
    pub(super) previous: Vec<EncryptionKey>,
}

/// `INTEGRATION_ENCRYPTION_KEY` and `INTEGRATION_ENCRYPTION_KEY_PREVIOUS`.
pub(super) fn keys(
    env: &Env,
    dev_dir: &Option<Option<PathBuf>>,
    production: bool,
) -> Result<Keys, ConfigError> {
    const VARIABLE: &str = "INTEGRATION_ENCRYPTION_KEY";
    let current = match (env.get(VARIABLE), dev_dir) {
        (Some(hex), _) => parse_key(VARIABLE, &hex)?,
        (None, Some(dir)) => parse_key(
            VARIABLE,
            &dev_secret(dir.as_deref(), "encryption.key", VARIABLE)?,
        )?,
        (None, None) => {
            return Err(ConfigError::Missing {
                variable: VARIABLE,
                why: format!(
                    "64 hex characters (32 bytes); {}",
                    refuse_generated_why(production)
                ),
            })
        }
    };
    let previous = match env.get("INTEGRATION_ENCRYPTION_KEY_PREVIOUS") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| parse_key("INTEGRATION_ENCRYPTION_KEY_PREVIOUS", k))
            .collect::<Result<_, _>>()?,
    };
    Ok(Keys { current, previous })
}

/// Shortest `SUPABASE_JWT_SECRET` accepted in production (Supabase's are 40 characters).
pub const MIN_PRODUCTION_JWT_SECRET_LEN: usize = 32;

pub(super) struct Sessions {
    pub(super) jwt_secret: Secret,
    pub(super) supabase_url: Option<Url>,
}

/// `SUPABASE_JWT_SECRET` and `SUPABASE_URL`.
pub(super) fn sessions(
    env: &Env,
    dev_dir: &Option<Option<PathBuf>>,
    production: bool,
) -> Result<Sessions, ConfigError> {
    const VARIABLE: &str = "SUPABASE_JWT_SECRET";
    let jwt_secret = match (env.get(VARIABLE), dev_dir) {
        (Some(secret), _) => Secret::new(secret),
        (None, Some(dir)) => Secret::new(dev_secret(dir.as_deref(), "jwt.secret", VARIABLE)?),
        (None, None) => {
            return Err(ConfigError::Missing {
                variable: VARIABLE,
                why: format!(
                    "the HS256 secret of Supabase session JWTs; {}",
                    refuse_generated_why(production)
                ),
            })
        }
    };
    if production && jwt_secret.expose().len() < MIN_PRODUCTION_JWT_SECRET_LEN {
        return Err(invalid(
            VARIABLE,
            &format!(
                "at least {MIN_PRODUCTION_JWT_SECRET_LEN} characters in production \
                 (a short HS256 secret can be guessed offline from one token)"
            ),
        ));
    }
    let supabase_url = env
        .get("SUPABASE_URL")
        .map(|url| parse_url("SUPABASE_URL", &url))
        .transpose()?;
    Ok(Sessions {
        jwt_secret,
        supabase_url,
    })
}

/// The folder holding an SQLite database file; `None` for an in-memory database.
pub(super) fn sqlite_data_dir(database_url: &str) -> Option<PathBuf> {
    let path = super::sqlite_file(database_url)?;
    Some(
        path.parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(".")),
    )
}

/// Reads a development secret from `dir/name`, generating 32 random bytes (hex) on first use.
/// An in-memory database gets a secret that lives as long as the process.
pub(super) fn dev_secret(
    dir: Option<&Path>,
    name: &str,
    variable: &str,
) -> Result<String, ConfigError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let fresh = hex::encode(bytes);
    let Some(dir) = dir else {
        tracing::warn!(
            "{variable} is not set: using a random development value for this process only"
        );
        return Ok(fresh);
    };
    let path = dir.join(format!("dev-{name}"));
    let io_err = |source| ConfigError::DevSecret {
        path: path.clone(),
        source,
    };
    if path.exists() {
        if let Some(why) = crate::private_fs::untrusted_secret_file(&path).map_err(io_err)? {
            return Err(ConfigError::UntrustedDevSecret {
                path: path.clone(),
                why,
            });
        }
        let existing = std::fs::read_to_string(&path).map_err(io_err)?;
        return Ok(existing.trim().to_string());
    }
    crate::private_fs::create_private_dir_all(dir).map_err(io_err)?;
    write_private(&path, &fresh).map_err(io_err)?;
    tracing::warn!(
        "!!! {variable} is not set: generated a DEVELOPMENT secret into {} (mode 0600). \
         Never use it in production: set {variable} instead. !!!",
        path.display()
    );
    Ok(fresh)
}

#[cfg(unix)]
pub(super) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
pub(super) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
