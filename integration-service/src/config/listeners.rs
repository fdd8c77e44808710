//! Where the service listens and what it links to: the gRPC listener (`GRPC_*`), the metrics
//! listener (`METRICS_ADDR`), and the URLs of the app and the public API.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use url::Url;

use super::{
    env::{invalid, parse_url, Env},
    ConfigError,
};

const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";
const DEFAULT_APP_URL: &str = "http://localhost:3007";
const DEFAULT_PUBLIC_API_URL: &str = "http://127.0.0.1:8080";

pub(super) struct Urls {
    pub(super) app: Url,
    pub(super) public_api: Url,
    pub(super) frontend_callback: Option<Url>,
}

/// `APP_URL` (alias `NEXT_PUBLIC_APP_URL`), `PUBLIC_API_URL`, `OAUTH_FRONTEND_CALLBACK_URL`.
pub(super) fn urls(env: &Env) -> Result<Urls, ConfigError> {
    let app = parse_url(
        "APP_URL",
        &env.get("APP_URL")
            .or_else(|| env.get("NEXT_PUBLIC_APP_URL"))
            .unwrap_or_else(|| DEFAULT_APP_URL.into()),
    )?;
    let public_api = parse_url(
        "PUBLIC_API_URL",
        &env.get("PUBLIC_API_URL")
            .unwrap_or_else(|| DEFAULT_PUBLIC_API_URL.into()),
    )?;
    let frontend_callback = env
        .get("OAUTH_FRONTEND_CALLBACK_URL")
        .map(|value| parse_url("OAUTH_FRONTEND_CALLBACK_URL", &value))
        .transpose()?;
    Ok(Urls {
        app,
        public_api,
        frontend_callback,
    })
}

pub(super) struct Grpc {
    pub(super) addr: SocketAddr,
    pub(super) unix_socket: Option<PathBuf>,
    pub(super) reflection: bool,
    pub(super) max_concurrent_streams: u32,
    pub(super) request_timeout: Option<Duration>,
}

/// `GRPC_ADDR`, `GRPC_UNIX_SOCKET`, `GRPC_REFLECTION`, `GRPC_MAX_CONCURRENT_STREAMS`,
/// `GRPC_REQUEST_TIMEOUT_SECS`.
pub(super) fn grpc(env: &Env, production: bool) -> Result<Grpc, ConfigError> {
    let addr = env
        .get("GRPC_ADDR")
        .unwrap_or_else(|| DEFAULT_GRPC_ADDR.into());
    let addr = addr
        .parse()
        .map_err(|_| invalid("GRPC_ADDR", &format!("expected host:port, got {addr:?}")))?;
    let max_concurrent_streams = match env.number("GRPC_MAX_CONCURRENT_STREAMS", 256)? {
        0 => {
            return Err(invalid(
                "GRPC_MAX_CONCURRENT_STREAMS",
                "expected at least 1",
            ))
        }
        n => u32::try_from(n).unwrap_or(u32::MAX),
    };
    Ok(Grpc {
        addr,
        unix_socket: env.get("GRPC_UNIX_SOCKET").map(PathBuf::from),
        reflection: env.switch("GRPC_REFLECTION", !production)?,
        max_concurrent_streams,
        request_timeout: env.optional_secs("GRPC_REQUEST_TIMEOUT_SECS", 60)?,
    })
}

/// `METRICS_ADDR`: a listen address, or `off`.
pub(super) fn metrics_addr(env: &Env) -> Result<Option<SocketAddr>, ConfigError> {
    let addr = env
        .get("METRICS_ADDR")
        .unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
    match addr.trim() {
        "off" | "false" | "0" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            invalid(
                "METRICS_ADDR",
                &format!("expected host:port or off, got {addr:?}"),
            )
        }),
    }
}
