//! The JetStream side of the sink: one connection per process (`async-nats`, which reconnects
//! by itself), the stream looked up — and created when absent — before the first batch and
//! again after any failure (a broker restarted without its store has lost it), and publishes
//! carrying `Nats-Msg-Id` so that JetStream keeps one message per event within
//! `DUPLICATE_WINDOW`.

use std::time::Duration;

use async_nats::{
    header::NATS_MESSAGE_ID,
    jetstream::{
        self,
        context::{CreateStreamError, PublishAckFuture, PublishError},
        stream::{Config as StreamConfig, StorageType},
    },
    Client, ConnectOptions, HeaderMap,
};
use bytes::Bytes;

use crate::config::EventSinkConfig;

/// How long JetStream remembers a `Nats-Msg-Id`: longer than anything that can make the
/// forwarder publish one event twice — a retry after a failed batch (at most
/// `forwarder::MAX_BACKOFF`, 30 s), a claim that ran out (`forwarder::LEASE`, 20 s), a replica
/// killed and restarted within these 10 minutes.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// How long a publish waits for its acknowledgement (and a stream lookup for its answer).
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Set on a message sent without `payload` and `headers` because the whole event is over the
/// server's `max_payload`; the value says why.
const PAYLOAD_OMITTED_HEADER: &str = "Integrations-Payload-Omitted";

/// What failed on the broker's side. Never carries `EVENT_SINK_URL` (it may hold credentials).
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("cannot connect to the NATS server: {0}")]
    Connect(#[source] async_nats::ConnectError),
    #[error("the JetStream stream could not be looked up or created: {0}")]
    Stream(#[source] CreateStreamError),
    #[error("publishing to JetStream failed: {0}")]
    Publish(#[source] PublishError),
}

/// A connection to the broker and the stream's settings.
pub struct JetStream {
    client: Client,
    context: jetstream::Context,
    stream: StreamConfig,
    stream_known: bool,
}

impl JetStream {
    /// Connects to `EVENT_SINK_URL`; the stream is looked up by `ensure_stream`.
    pub async fn connect(config: &EventSinkConfig) -> Result<Self, JetStreamError> {
        let client = ConnectOptions::new()
            .name("integration-service event sink")
            .connection_timeout(ACK_WAIT)
            .connect(config.url.expose())
            .await
            .map_err(JetStreamError::Connect)?;
        let context = jetstream::ContextBuilder::new()
            .timeout(ACK_WAIT)
            .build(client.clone());
        Ok(Self {
            client,
            context,
            stream: stream_config(config),
            stream_known: false,
        })
    }

    /// Looks the stream up, creating it when absent, unless it is known since the last failure.
    pub async fn ensure_stream(&mut self) -> Result<(), JetStreamError> {
        if !self.stream_known {
            self.context
                .get_or_create_stream(self.stream.clone())
                .await
                .map_err(JetStreamError::Stream)?;
            self.stream_known = true;
        }
        Ok(())
    }

    /// Something failed: the stream is looked up again before the next publish.
    pub fn forget_stream(&mut self) {
        self.stream_known = false;
    }

    /// The largest message the server accepts (headers included).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Sends one message; the returned future resolves to JetStream's acknowledgement. Many
    /// are sent before any is awaited.
    pub async fn publish(
        &self,
        subject: String,
        message_id: &str,
        payload_omitted: bool,
        body: Vec<u8>,
    ) -> Result<PublishAckFuture, JetStreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message_id);
        if payload_omitted {
            headers.insert(PAYLOAD_OMITTED_HEADER, "max_payload");
        }
        self.context
            .publish_with_headers(subject, headers, Bytes::from(body))
            .await
            .map_err(JetStreamError::Publish)
    }
}

/// The stream as the SPEC names it: `{prefix}.>`, file storage, the duplicate window.
fn stream_config(config: &EventSinkConfig) -> StreamConfig {
    StreamConfig {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("Webhook events forwarded by integration-service".into()),
        ..Default::default()
    }
}
