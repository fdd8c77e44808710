//! `integrations.v1.WebhookService`: receiving deliveries (the gateway), consuming events
//! (internal services, service_role), inspecting and replaying them (Owner/Admin).

use std::{pin::Pin, time::Duration};

use chrono::Utc;
use futures::Stream;
use integrations_proto::v1::{
    webhook_service_server::WebhookService, ListEventsRequest, ListEventsResponse,
    MarkProcessedRequest, MarkProcessedResponse, ReceiveWebhookRequest, ReceiveWebhookResponse,
    RecordErrorRequest, RecordErrorResponse, ReplayEventRequest, SubscribeEventsRequest,
    WebhookEvent,
};
use tonic::{metadata::MetadataMap, Request, Response, Status};
use uuid::Uuid;

use super::integrations::rfc3339;
use crate::{
    access,
    auth::{credentials_from_metadata, Caller},
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
    integrations::IntegrationRef,
    store::{
        self,
        entities::webhook_event::{self, EventStatus},
        webhook_events::{AfterError, ClaimedEvent, EventFilter},
    },
    webhooks::{
        dispatch::Subscription,
        receive::{self, Delivery},
        retry, WebhookRuntime,
    },
};

/// Default and largest page of ListEvents.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 200;
/// Longest error text kept on an event.
const MAX_ERROR_LEN: usize = 2000;

pub struct WebhookApi {
    ctx: AppContext,
    runtime: WebhookRuntime,
}

impl WebhookApi {
    pub fn new(ctx: AppContext, runtime: WebhookRuntime) -> Self {
        Self { ctx, runtime }
    }

    /// Consumers are internal services: a service_role token, any organization.
    fn require_service(&self, metadata: &MetadataMap) -> ServiceResult<()> {
        let token = credentials_from_metadata(metadata)
            .token
            .ok_or_else(|| ServiceError::unauthenticated("Authentication required"))?;
        match self.ctx.sessions.verify(&token)? {
            Caller::Service => Ok(()),
            Caller::User(_) => Err(ServiceError::PermissionDenied(
                Problem::new("Forbidden").details("event consumers use a service_role token"),
            )),
        }
    }

    /// An event of the caller's organization (404 for another organization's event).
    async fn event_of(
        &self,
        metadata: &MetadataMap,
        event_id: &str,
    ) -> ServiceResult<webhook_event::Model> {
        let access = access::require_manager(&self.ctx.db, &self.ctx.sessions, metadata).await?;
        let id = parse_event_id(event_id)?;
        let event = store::webhook_events::find(&self.ctx.db, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        store::integrations::find_by_id(&self.ctx.db, access.organization_id, event.integration_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        Ok(event)
    }
}

fn parse_event_id(value: &str) -> ServiceResult<Uuid> {
    Uuid::parse_str(value.trim()).map_err(|_| {
        ServiceError::InvalidArgument(
            Problem::new("Invalid event id").details("expected the event's UUID"),
        )
    })
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
        };
        let answer = receive::receive(&self.ctx, &self.runtime, delivery).await?;
        Ok(Response::new(ReceiveWebhookResponse {
            http_status: answer.http_status.into(),
            body_json: answer.body.to_string(),
            event_id: answer.event_id.map(|id| id.to_string()),
        }))
    }

    type SubscribeEventsStream = EventStream;

    async fn subscribe_events(
        &self,
        request: Request<SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        self.require_service(request.metadata())?;
        let message = request.into_inner();
        let lease = message.lease_seconds.unwrap_or(30);
        if !(1..=3600).contains(&lease) {
            return Err(ServiceError::InvalidArgument(
                Problem::new("Invalid lease").details("lease_seconds: 1 to 3600"),
            )
            .into());
        }
        let prefetch = message.prefetch.unwrap_or(16);
        if !(1..=256).contains(&prefetch) {
            return Err(ServiceError::InvalidArgument(
                Problem::new("Invalid prefetch").details("prefetch: 1 to 256"),
            )
            .into());
        }
        let filter = EventFilter {
            organization_id: message.organization_id,
            provider: message.provider.map(|p| p.to_ascii_lowercase()),
            event_types: message.event_types,
        };
        let subscription = self.runtime.dispatcher.subscribe(
            filter,
            Duration::from_secs(lease as u64),
            prefetch as usize,
        );
        let stream = async_stream(move |yielder| stream_events(subscription, yielder));
        Ok(Response::new(stream))
    }

    async fn mark_processed(
        &self,
        request: Request<MarkProcessedRequest>,
    ) -> Result<Response<MarkProcessedResponse>, Status> {
        self.require_service(request.metadata())?;
        let id = parse_event_id(&request.get_ref().event_id)?;
        if !store::webhook_events::mark_processed(&self.ctx.db, id, Utc::now())
            .await
            .map_err(ServiceError::from)?
        {
            let event = store::webhook_events::find(&self.ctx.db, id)
                .await
                .map_err(ServiceError::from)?
                .ok_or_else(|| ServiceError::not_found("Event not found"))?;
            if event.status != EventStatus::Processed {
                return Err(ServiceError::FailedPrecondition(
                    Problem::new("Event cannot be acknowledged")
                        .details(format!("the event is {}", event.status)),
                )
                .into());
            }
        }
        self.runtime.dispatcher.wake();
        Ok(Response::new(MarkProcessedResponse {}))
    }

    async fn record_error(
        &self,
        request: Request<RecordErrorRequest>,
    ) -> Result<Response<RecordErrorResponse>, Status> {
        self.require_service(request.metadata())?;
        let message = request.into_inner();
        let id = parse_event_id(&message.event_id)?;
        let error: String = message.error.chars().take(MAX_ERROR_LEN).collect();
        let now = Utc::now();
        let recorded = store::webhook_events::record_error(&self.ctx.db, id, &error, |attempts| {
            retry::after_error(attempts, now)
        })
        .await
        .map_err(ServiceError::from)?;
        let Some((event, after)) = recorded else {
            let event = store::webhook_events::find(&self.ctx.db, id)
                .await
                .map_err(ServiceError::from)?
                .ok_or_else(|| ServiceError::not_found("Event not found"))?;
            return Err(ServiceError::FailedPrecondition(
                Problem::new("Event cannot take an error")
                    .details(format!("the event is {}", event.status)),
            )
            .into());
        };
        if matches!(after, AfterError::Dead) {
            tracing::warn!(event = %id, attempts = event.retry_count, "webhook event dead after its last attempt");
        }
        Ok(Response::new(RecordErrorResponse {
            status: event.status.to_string(),
            next_attempt_at: event.next_attempt_at.map(rfc3339),
        }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let access =
            access::require_manager(&self.ctx.db, &self.ctx.sessions, request.metadata()).await?;
        let message = request.into_inner();
        let record = match IntegrationRef::parse(message.integration_id.trim()) {
            IntegrationRef::Id(id) => {
                store::integrations::find_by_id(&self.ctx.db, access.organization_id, id).await
            }
            IntegrationRef::Provider(name) => {
                store::integrations::find_by_provider(
                    &self.ctx.db,
                    access.organization_id,
                    &name.to_ascii_lowercase(),
                )
                .await
            }
        }
        .map_err(ServiceError::from)?
        .ok_or_else(|| ServiceError::not_found("Integration not found"))?;
        let page_size = match message.page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 => {
                return Err(ServiceError::invalid("page_size must not be negative").into())
            }
            n => (n as u64).min(MAX_PAGE),
        };
        let offset = match message.page_token.trim() {
            "" => 0,
            token => token.parse::<u64>().map_err(|_| {
                ServiceError::InvalidArgument(
                    Problem::new("Invalid page token").details("use next_page_token as given"),
                )
            })?,
        };
        let status = message
            .status
            .as_deref()
            .map(|s| s.trim().to_ascii_uppercase());
        let mut events = store::webhook_events::list_for_integration(
            &self.ctx.db,
            record.id,
            status.as_deref(),
            offset,
            page_size + 1,
        )
        .await
        .map_err(ServiceError::from)?;
        let more = events.len() as u64 > page_size;
        events.truncate(page_size as usize);
        Ok(Response::new(ListEventsResponse {
            next_page_token: if more {
                (offset + page_size).to_string()
            } else {
                String::new()
            },
            events: events
                .into_iter()
                .map(|event| event_to_proto(event, record.organization_id, record.provider.clone()))
                .collect(),
        }))
    }

    async fn replay_event(
        &self,
        request: Request<ReplayEventRequest>,
    ) -> Result<Response<WebhookEvent>, Status> {
        let event = self
            .event_of(request.metadata(), &request.get_ref().event_id)
            .await?;
        let record = store::integrations::find_for_webhook(&self.ctx.db, event.integration_id)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        let replayed = store::webhook_events::replay(&self.ctx.db, event.id, Utc::now())
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(|| ServiceError::not_found("Event not found"))?;
        self.runtime.dispatcher.wake();
        Ok(Response::new(event_to_proto(
            replayed,
            record.organization_id,
            record.provider,
        )))
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
            .send(Ok(claimed_to_proto(claimed.clone())))
            .await
            .is_err()
        {
            subscription.release(Some(claimed)).await;
            return;
        }
    }
    subscription.release(None).await;
}

fn claimed_to_proto(claimed: ClaimedEvent) -> WebhookEvent {
    event_to_proto(claimed.event, claimed.organization_id, claimed.provider)
}

pub fn event_to_proto(
    event: webhook_event::Model,
    organization_id: i64,
    provider: String,
) -> WebhookEvent {
    WebhookEvent {
        id: event.id.to_string(),
        integration_id: event.integration_id.to_string(),
        organization_id,
        provider,
        event_type: event.event_type,
        payload_json: event.payload.to_string(),
        headers_json: event
            .headers
            .map(|h| h.to_string())
            .unwrap_or_else(|| "{}".into()),
        status: event.status.to_string(),
        retry_count: event.retry_count,
        last_error: event.last_error,
        received_at: rfc3339(event.received_at),
        delivery_id: event.delivery_id,
        lease_expires_at: event.lease_expires_at.map(rfc3339),
        next_attempt_at: event.next_attempt_at.map(rfc3339),
        processed_at: event.processed_at.map(rfc3339),
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
