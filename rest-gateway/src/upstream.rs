//! The gRPC clients of the integration service and the one place request credentials are
//! forwarded: `authorization`, `cookie` (session and `org_id`) and `x-organization-id` travel
//! as gRPC metadata; the service alone authenticates and authorizes.

use std::time::Duration;

use http::HeaderMap;
use integrations_proto::v1::{
    integration_service_client::IntegrationServiceClient,
    o_auth_service_client::OAuthServiceClient, webhook_service_client::WebhookServiceClient,
};
use tonic::{
    metadata::{MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
    Request,
};

/// Headers forwarded as metadata, all of them when repeated.
const FORWARDED_HEADERS: [&str; 3] = ["authorization", "cookie", "x-organization-id"];

#[derive(Clone)]
pub struct Upstream {
    channel: Channel,
}

impl Upstream {
    /// A lazily connecting channel: the gateway starts even while the service is down.
    pub fn new(service_url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(service_url.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self { channel })
    }

    pub fn integrations(&self) -> IntegrationServiceClient<Channel> {
        IntegrationServiceClient::new(self.channel.clone())
    }

    pub fn oauth(&self) -> OAuthServiceClient<Channel> {
        OAuthServiceClient::new(self.channel.clone())
    }

    /// Webhook bodies reach 25 MB: the encoding limit is lifted for them.
    pub fn webhooks(&self) -> WebhookServiceClient<Channel> {
        WebhookServiceClient::new(self.channel.clone()).max_encoding_message_size(usize::MAX)
    }

    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }
}

/// A gRPC request carrying the HTTP request's credentials.
pub fn forwarded<T>(headers: &HeaderMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    copy_credentials(headers, request.metadata_mut());
    request
}

fn copy_credentials(headers: &HeaderMap, metadata: &mut MetadataMap) {
    for name in FORWARDED_HEADERS {
        for value in headers.get_all(name) {
            // Values that are not valid metadata (non-visible ASCII) are dropped, not mangled.
            if let Ok(value) = MetadataValue::try_from(value.as_bytes()) {
                metadata.append(name, value);
            }
        }
    }
}
