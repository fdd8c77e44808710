//! The sandbox as `./dev.sh` runs it: one fake per provider dialect on fixed consecutive ports
//! (GitHub's on the given address, Slack's on the next port, Microsoft's — RFC 6749 with Graph's
//! subscriptions API — on the one after), and the service variables pointing at them.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::fake_provider::{provider_env, FakeProvider, FakeStyle};

/// The default address of the sandbox's GitHub (Slack's is the next port, Microsoft's the one
/// after).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8070";
/// The Slack app signing secret the sandbox's Slack samples are signed with, which `env` gives
/// the service as `SLACK_SIGNING_SECRET` (development only: never a real app's).
pub const SANDBOX_SLACK_SIGNING_SECRET: &str = "sandbox-slack-signing-secret";

/// The catalog providers the sandbox stands in for: (variable prefix, dialect, port offset).
const PROVIDERS: [(&str, FakeStyle, u16); 3] = [
    ("GITHUB", FakeStyle::Github, 0),
    ("SLACK", FakeStyle::Slack, 1),
    ("MICROSOFT", FakeStyle::Standard, 2),
];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the sandbox needs three consecutive ports from {0}")]
    Ports(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn addr_of(base: SocketAddr, offset: u16) -> Result<SocketAddr, SandboxError> {
    let port = base
        .port()
        .checked_add(offset)
        .filter(|_| base.port() != 0)
        .ok_or(SandboxError::Ports(base))?;
    Ok(SocketAddr::new(base.ip(), port))
}

/// `NAME=value` pairs pointing the service's GitHub, Slack and Microsoft at a sandbox served
/// from `base`, and the Slack signing secret of its samples.
pub fn env(base: SocketAddr) -> Result<Vec<(String, String)>, SandboxError> {
    let mut vars = Vec::new();
    for (prefix, style, offset) in PROVIDERS {
        let url = format!("http://{}", addr_of(base, offset)?);
        vars.extend(provider_env(&url, style, prefix));
    }
    vars.push((
        "SLACK_SIGNING_SECRET".into(),
        SANDBOX_SLACK_SIGNING_SECRET.into(),
    ));
    Ok(vars)
}

/// Starts the sandbox's fakes, each with the provider it stands in for (`github`...); they
/// serve until the returned values are dropped.
pub async fn serve(base: SocketAddr) -> Result<Vec<(String, FakeProvider)>, SandboxError> {
    let mut fakes = Vec::new();
    for (prefix, style, offset) in PROVIDERS {
        let addr = addr_of(base, offset)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SandboxError::Listen { addr, source })?;
        fakes.push((
            prefix.to_ascii_lowercase(),
            FakeProvider::start_on(listener, style),
        ));
    }
    Ok(fakes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_points_each_provider_at_its_own_port() {
        let vars = env("127.0.0.1:8070".parse().unwrap()).unwrap();
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("GITHUB_AUTHORIZE_URL"),
            Some("http://127.0.0.1:8070/authorize")
        );
        assert_eq!(get("SLACK_TOKEN_URL"), Some("http://127.0.0.1:8071/token"));
        assert_eq!(get("MICROSOFT_API_URL"), Some("http://127.0.0.1:8072"));
        assert_eq!(
            get("SLACK_SIGNING_SECRET"),
            Some(SANDBOX_SLACK_SIGNING_SECRET)
        );
        assert!(env("127.0.0.1:65535".parse().unwrap()).is_err());
        assert!(env("127.0.0.1:0".parse().unwrap()).is_err());
    }
}
