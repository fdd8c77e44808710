//! `integrations.v1.WebhookService`: receiving deliveries (the gateway), consuming events
//! (internal services, service_role), inspecting and replaying them (Owner/Admin). The rules
//! are in `webhooks::receive` and `webhooks::events`.

use std::pin::Pin;

use futures::Stream;
use integrations_proto::v1::{
    webhook_service_server::WebhookService, AdmitWebhookRequest, AdmitWebhookResponse,
    GetEventRequest, Header, ListEventsRequest, ListEventsResponse, MarkProcessedRequest,
    MarkProcessedResponse, ReceiveWebhookRequest, ReceiveWebhookResponse, RecordErrorRequest,
    RecordErrorResponse, ReplayEventRequest, SubscribeEventsRequest, WebhookEvent,
};
use tonic::{Request, Response, Status};

use super::{authorize, authorize_service, integration_ref, respond, rfc3339, Need};
use crate::{
    context::AppContext,
    webhooks::{
        admission,
        dispatch::Subscription,
        events::{self, parse_event_id, EventFilter, EventView, ListQuery, StreamSettings},
        intake,
        receive::Delivery,
        WebhookRuntime,
    },
};

pub(crate) struct WebhookApi {
    ctx: AppContext,
    runtime: WebhookRuntime,
}

impl WebhookApi {
    pub(crate) fn new(ctx: AppContext, runtime: WebhookRuntime) -> Self {
        Self { ctx, runtime }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<WebhookEvent, Status>> + Send>>;

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn receive_webhook(
        &self,
        request: Request<ReceiveWebhookRequest>,
    ) -> Result<Response<ReceiveWebhookResponse>, Status> {
        let message = request.into_inner();
        let delivery = Delivery {
            provider: message.provider.to_ascii_lowercase(),
            integration_id: message.integration_id,
            headers: message
                .headers
                .into_iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value))
                .collect(),
            body: message.body,
            query: message.query,
            ..Delivery::default()
        };
        respond(
            async {
                let answer = intake::receive(&self.ctx, &self.runtime, delivery).await?;
                let (content_type, raw_body) = answer.raw.unzip();
                Ok(ReceiveWebhookResponse {
                    http_status: answer.http_status.into(),
                    body_json: answer.body.to_string(),
                    event_id: answer.event_id.map(|id| id.to_string()),
                    content_type,
                    raw_body,
                    response_headers: answer
                        .headers
                        .into_iter()
                        .map(|(name, value)| Header {
                            name,
                            value: value.into_bytes(),
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn admit_webhook(
        &self,
        request: Request<AdmitWebhookRequest>,
    ) -> Result<Response<AdmitWebhookResponse>, Status> {
        let message = request.into_inner();
        let provider = message.provider.to_ascii_lowercase();
        let headers = message.headers;
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(&h.value).ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        respond(
            admission::admit(
                &self.ctx,
                &self.runtime,
                &provider,
                message.integration_id.as_deref(),
                header,
            )
            .await
            .map(|admitted| AdmitWebhookResponse {
                body_limit_bytes: admitted.body_limit.map_or(0, |limit| limit as u64),
            }),
        )
    }

    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        request: Request<SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        respond(
            async {
                authorize_service(&self.ctx, request.metadata())?;
                let message = request.into_inner();
                let settings = StreamSettings::new(message.lease_seconds, message.prefetch)?;
                let filter = EventFilter {
                    organization_id: message.organization_id,
                    provider: message.provider.map(|p| p.to_ascii_lowercase()),
                    event_types: message.event_types,
                };
                let subscription = events::subscribe(&self.runtime, filter, settings);
                Ok(async_stream(move |yielder| {
                    stream_events(subscription, yielder)
                }))
            }
            .await,
        )
    }

    async fn mark_processed(
        &self,
        request: Request<MarkProcessedRequest>,
    ) -> Result<Response<MarkProcessedResponse>, Status> {
        respond(
            async {
                authorize_service(&self.ctx, request.metadata())?;
                let id = parse_event_id(&request.get_ref().event_id)?;
                events::mark_processed(&self.ctx, &self.runtime, id).await?;
                Ok(MarkProcessedResponse {})
            }
            .await,
        )
    }

    async fn record_error(
        &self,
        request: Request<RecordErrorRequest>,
    ) -> Result<Response<RecordErrorResponse>, Status> {
        respond(
            async {
                authorize_service(&self.ctx, request.metadata())?;
                let message = request.get_ref();
                let id = parse_event_id(&message.event_id)?;
                let event = events::record_error(&self.ctx, id, &message.error).await?;
                Ok(RecordErrorResponse {
                    status: event.status.to_string(),
                    next_attempt_at: event.next_attempt_at.map(rfc3339),
                })
            }
            .await,
        )
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let message = request.into_inner();
                let integration = integration_ref(&message.integration_id);
                let query = ListQuery {
                    page_size: Some(message.page_size.into()),
                    cursor: Some(message.page_token),
                    status: message.status,
                    event_type: message.event_type,
                    since: message.since,
                    include_payloads: message.include_payloads,
                };
                let page = events::list(&self.ctx, &access, &integration, query).await?;
                Ok(ListEventsResponse {
                    events: page.events.into_iter().map(event_to_proto).collect(),
                    next_page_token: page.next_cursor.unwrap_or_default(),
                })
            }
            .await,
        )
    }

    async fn replay_event(
        &self,
        request: Request<ReplayEventRequest>,
    ) -> Result<Response<WebhookEvent>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let message = request.get_ref();
                let id = parse_event_id(&message.event_id)?;
                let integration = message.integration_id.as_deref().map(integration_ref);
                let view =
                    events::replay(&self.ctx, &self.runtime, &access, integration.as_ref(), id)
                        .await?;
                Ok(event_to_proto(view))
            }
            .await,
        )
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<WebhookEvent>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let message = request.get_ref();
                let integration = integration_ref(&message.integration_id);
                let id = parse_event_id(&message.event_id)?;
                let view = events::get(&self.ctx, &access, Some(&integration), id).await?;
                Ok(event_to_proto(view))
            }
            .await,
        )
    }
}

/// Feeds one consumer's stream. When the consumer leaves, what was claimed for it but not
/// sent is released (no attempt lost); when the service shuts down, the stream ends with
/// UNAVAILABLE so the consumer subscribes again (to another replica).
async fn stream_events(
    mut subscription: Subscription,
    yielder: tokio::sync::mpsc::Sender<Result<WebhookEvent, Status>>,
) {
    loop {
        let claimed = tokio::select! {
            claimed = subscription.next() => claimed,
            () = yielder.closed() => break,
        };
        let Some(claimed) = claimed else {
            let _ = yielder
                .send(Err(Status::unavailable(
                    "the service is shutting down: subscribe again",
                )))
                .await;
            return;
        };
        if yielder
            .send(Ok(event_to_proto(claimed.clone().into())))
            .await
            .is_err()
        {
            subscription.release(Some(claimed)).await;
            return;
        }
    }
    subscription.release(None).await;
}

fn event_to_proto(view: EventView) -> WebhookEvent {
    let EventView {
        event,
        organization_id,
        provider,
        payload_omitted,
    } = view;
    let (payload_json, headers_json) = match payload_omitted {
        true => (String::new(), String::new()),
        false => (
            event.payload.to_string(),
            event
                .headers
                .map(|h| h.to_string())
                .unwrap_or_else(|| "{}".into()),
        ),
    };
    WebhookEvent {
        id: event.id.to_string(),
        integration_id: event.integration_id.to_string(),
        organization_id,
        provider,
        event_type: event.event_type,
        payload_json,
        headers_json,
        status: event.status.to_string(),
        retry_count: event.retry_count,
        last_error: event.last_error,
        received_at: rfc3339(event.received_at),
        delivery_id: event.delivery_id,
        lease_expires_at: event.lease_expires_at.map(rfc3339),
        next_attempt_at: event.next_attempt_at.map(rfc3339),
        processed_at: event.processed_at.map(rfc3339),
        payload_omitted,
    }
}

/// A stream fed by a task through a bounded channel; the task ends when the consumer leaves.
fn async_stream<F, Fut>(produce: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WebhookEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(produce(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
