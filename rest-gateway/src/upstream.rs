//! The gRPC clients of the integration service and the one place request credentials are
//! forwarded: `authorization`, the cookies the service reads (`sb-*` sessions, `org_id`,
//! `oauth_state_*`) and `x-organization-id` travel as gRPC metadata; the service alone
//! authenticates and authorizes.
//!
//! Invariants: other cookies never travel, whatever bytes they hold (a `city=Zürich` cookie of
//! another app must not cost the user their session); an organization selector that cannot be
//! read is refused (400), never dropped — dropping it would act on the user's default
//! organization instead of the one asked for.

use std::time::Duration;

use http::HeaderMap;
use integrations_proto::v1::{
    integration_service_client::IntegrationServiceClient,
    o_auth_service_client::OAuthServiceClient,
    subscription_service_client::SubscriptionServiceClient,
    webhook_service_client::WebhookServiceClient,
};
use tonic::{
    metadata::{MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
    Request,
};

use service_kit::wire::{REQUEST_ID, TRACEPARENT};

use crate::error::GatewayError;

/// Most metadata bytes forwarded to the service (its HTTP/2 header list limit is larger).
const MAX_FORWARDED_BYTES: usize = 48 * 1024;

#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
}

impl Upstream {
    /// A lazily connecting channel: the gateway starts even while the service is down.
    /// `timeout` bounds every call (504 beyond it).
    pub fn new(service_url: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        if let Some(path) = service_url.strip_prefix("unix://") {
            return Ok(Self::over_unix_socket(path.into(), timeout));
        }
        let channel = Endpoint::from_shared(service_url.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self { channel })
    }

    /// `unix:///path`: the service on this host, over its Unix domain socket
    /// (`GRPC_UNIX_SOCKET`). The endpoint's URI only names the HTTP/2 authority.
    fn over_unix_socket(path: std::path::PathBuf, timeout: Duration) -> Self {
        let connector = tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let channel = Endpoint::from_static("http://integration-service")
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .connect_with_connector_lazy(connector);
        Self { channel }
    }

    pub fn integrations(&self) -> IntegrationServiceClient<Channel> {
        IntegrationServiceClient::new(self.channel.clone())
    }

    pub fn oauth(&self) -> OAuthServiceClient<Channel> {
        OAuthServiceClient::new(self.channel.clone())
    }

    pub fn subscriptions(&self) -> SubscriptionServiceClient<Channel> {
        SubscriptionServiceClient::new(self.channel.clone())
    }

    /// Webhook bodies reach 25 MB: the encoding limit is lifted for them.
    pub fn webhooks(&self) -> WebhookServiceClient<Channel> {
        WebhookServiceClient::new(self.channel.clone()).max_encoding_message_size(usize::MAX)
    }

    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }
}

/// A gRPC request carrying the HTTP request's credentials; call `check_credentials` first
/// (the router does, for every route).
pub(crate) fn forwarded<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    copy_credentials(headers, request.metadata_mut());
    request
}

/// Refuses credentials the service could not be given faithfully: an unreadable organization
/// selector (400) or more credential bytes than the service accepts (431).
pub(crate) fn check_credentials(headers: &HeaderMap) -> Result<(), GatewayError> {
    let unreadable = || {
        GatewayError::bad_request(
            "Invalid organization",
            "x-organization-id and the org_id cookie must be printable ASCII",
        )
    };
    for value in headers.get_all("x-organization-id") {
        if !is_metadata_safe(value.as_bytes()) {
            return Err(unreadable());
        }
    }
    if forwarded_cookies(headers)
        .iter()
        .any(|(name, value)| name == b"org_id" && !is_metadata_safe(value))
    {
        return Err(unreadable());
    }
    let mut metadata = MetadataMap::new();
    copy_credentials(headers, &mut metadata);
    let size: usize = metadata
        .as_ref()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    if size > MAX_FORWARDED_BYTES {
        return Err(GatewayError::HeadersTooLarge {
            limit: MAX_FORWARDED_BYTES,
        });
    }
    Ok(())
}

/// A request to the service carrying the request's identity (its id and `traceparent`) but
/// no credentials: provider deliveries, which the service logs under the same request id.
pub(crate) fn forwarded_identity<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    copy_identity(headers, request.metadata_mut());
    request
}

fn copy_identity(headers: &HeaderMap, metadata: &mut MetadataMap) {
    // Set or validated by `server::request_identity`, so the service's span of the RPC
    // carries the same request id.
    for name in [REQUEST_ID, TRACEPARENT] {
        if let Some(value) = headers
            .get(name)
            .and_then(|v| MetadataValue::try_from(v.as_bytes()).ok())
        {
            metadata.insert(name, value);
        }
    }
}

fn copy_credentials(headers: &HeaderMap, metadata: &mut MetadataMap) {
    copy_identity(headers, metadata);
    for name in ["authorization", "x-organization-id"] {
        for value in headers.get_all(name) {
            // `check_credentials` refused an unreadable organization. An unreadable
            // authorization is still an authorization: the service refuses it (401) instead
            // of falling back to the session cookie.
            match MetadataValue::try_from(value.as_bytes()) {
                Ok(value) => metadata.append(name, value),
                Err(_) => metadata.append(name, MetadataValue::from_static("unreadable")),
            };
        }
    }
    let cookies: Vec<Vec<u8>> = forwarded_cookies(headers)
        .into_iter()
        .filter(|(_, value)| is_metadata_safe(value))
        .map(|(name, value)| [name, b"=", value].concat())
        .collect();
    if !cookies.is_empty() {
        if let Ok(value) = MetadataValue::try_from(cookies.join(&b"; "[..]).as_slice()) {
            metadata.insert("cookie", value);
        }
    }
}

/// Whether the request carries something the service could accept as a session: a non-empty
/// `Authorization` header or a Supabase session cookie (`sb-...`). The service verifies it;
/// this only lets the gateway refuse an anonymous request before reading its body.
pub(crate) fn has_credentials(headers: &HeaderMap) -> bool {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty());
    authorization
        || forwarded_cookies(headers)
            .iter()
            .any(|(name, value)| name.starts_with(b"sb-") && !value.is_empty())
}

/// The (name, value) pairs of every `Cookie` header that the service reads, as raw bytes.
pub(crate) fn forwarded_cookies(headers: &HeaderMap) -> Vec<(&[u8], &[u8])> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|header| parse_cookie_bytes(header.as_bytes()))
        .filter(|(name, _)| is_forwarded_cookie(name))
        .collect()
}

/// Splits a `Cookie` header (RFC 6265 `name=value; name=value`) without assuming any
/// encoding: other sites' cookies may hold any byte.
fn parse_cookie_bytes(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|b| *b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let at = pair.iter().position(|b| *b == b'=')?;
        let (name, value) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
        (!name.is_empty()).then_some((name, value))
    })
}

fn is_forwarded_cookie(name: &[u8]) -> bool {
    name.starts_with(b"sb-") || name == b"org_id" || name.starts_with(b"oauth_state_")
}

fn is_metadata_safe(value: &[u8]) -> bool {
    value.iter().all(|b| (0x20..0x7f).contains(b))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn only_the_cookies_the_service_reads_are_forwarded() {
        let map = headers(&[(
            "cookie",
            "city=Z\u{fc}rich; sb-abc-auth-token.0=base64-x; theme=dark; org_id=2; oauth_state_github=s".as_bytes(),
        )]);
        check_credentials(&map).unwrap();
        let request = forwarded(&map, ());
        assert_eq!(
            request.metadata().get("cookie").unwrap().to_str().unwrap(),
            "sb-abc-auth-token.0=base64-x; org_id=2; oauth_state_github=s"
        );
    }

    #[test]
    fn an_unreadable_organization_is_refused() {
        let map = headers(&[("x-organization-id", b"2\xff")]);
        assert!(matches!(
            check_credentials(&map),
            Err(GatewayError::BadRequest { .. })
        ));
        let map = headers(&[("cookie", b"org_id=2\xff; sb-access-token=t")]);
        assert!(matches!(
            check_credentials(&map),
            Err(GatewayError::BadRequest { .. })
        ));
        let map = headers(&[("cookie", b"other=\xff; org_id=2")]);
        check_credentials(&map).unwrap();
    }

    #[test]
    fn too_many_credential_bytes_are_431() {
        let big = format!("Bearer {}", "a".repeat(MAX_FORWARDED_BYTES));
        let map = headers(&[("authorization", big.as_bytes())]);
        assert!(matches!(
            check_credentials(&map),
            Err(GatewayError::HeadersTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn cookie_parsing_never_panics(header in proptest::collection::vec(any::<u8>(), 0..512)) {
            for (name, value) in parse_cookie_bytes(&header) {
                prop_assert!(!name.is_empty());
                prop_assert!(!name.contains(&b';') && !value.contains(&b';'));
            }
            if let Ok(value) = HeaderValue::from_bytes(&header) {
                let mut map = HeaderMap::new();
                map.insert(http::header::COOKIE, value);
                let _ = check_credentials(&map);
                let request = forwarded(&map, ());
                if let Some(cookie) = request.metadata().get("cookie") {
                    prop_assert!(cookie.to_str().is_ok());
                }
            }
        }
    }
}
