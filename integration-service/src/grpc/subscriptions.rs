//! `integrations.v1.SubscriptionService`: convert, call `subscriptions`, convert.

use integrations_proto::v1::{
    subscription_service_server::SubscriptionService, CreateSubscriptionRequest,
    DeleteSubscriptionRequest, ListSubscriptionsRequest, ListSubscriptionsResponse, Subscription,
};
use tonic::{Request, Response, Status};

use super::{authorize, integration_ref, respond, rfc3339, Need};
use crate::{
    context::AppContext,
    subscriptions::{self, Record},
};

pub(crate) struct SubscriptionApi {
    ctx: AppContext,
}

impl SubscriptionApi {
    pub(crate) fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let id = integration_ref(&request.get_ref().integration_id);
                let items = subscriptions::list(&self.ctx, &access, &id).await?;
                Ok(ListSubscriptionsResponse {
                    subscriptions: items.iter().map(to_proto).collect(),
                })
            }
            .await,
        )
    }

    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.into_inner();
                let id = integration_ref(&body.integration_id);
                let item =
                    subscriptions::create(&self.ctx, &access, &id, &body.resource, body.events)
                        .await?;
                Ok(to_proto(&item))
            }
            .await,
        )
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.get_ref();
                let id = integration_ref(&body.integration_id);
                let item =
                    subscriptions::delete(&self.ctx, &access, &id, &body.subscription_id).await?;
                Ok(to_proto(&item))
            }
            .await,
        )
    }
}

/// The proto item; the lease and retry bookkeeping stay inside.
pub(crate) fn to_proto(model: &Record) -> Subscription {
    Subscription {
        id: model.id.to_string(),
        integration_id: model.integration_id.to_string(),
        provider: model.provider.clone(),
        resource: model.resource.clone(),
        events: subscriptions::events_of(model),
        state: model.state.as_str().to_string(),
        provider_subscription_id: model.provider_subscription_id.clone(),
        expires_at: model.expires_at.map(rfc3339),
        renewed_at: model.renewed_at.map(rfc3339),
        last_error: model.last_error.clone(),
        created_at: rfc3339(model.created_at),
        updated_at: rfc3339(model.updated_at),
    }
}
