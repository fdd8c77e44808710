//! `integrations.v1.IntegrationService`.

use integrations_proto::v1::{
    integration_service_server::IntegrationService, DisconnectIntegrationRequest,
    DisconnectIntegrationResponse, GetIntegrationRequest, Integration, ListIntegrationsRequest,
    ListIntegrationsResponse, UpdateIntegrationRequest,
};
use tonic::{Request, Response, Status};

use super::{authorize, integration_ref, list_as_manager, respond, rfc3339, Need};
use crate::{
    context::AppContext,
    error::ServiceError,
    integrations::{self, IntegrationView, SettingsUpdate},
};

pub(crate) struct IntegrationApi {
    ctx: AppContext,
}

impl IntegrationApi {
    pub(crate) fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }

    fn to_proto(&self, view: IntegrationView) -> Integration {
        to_proto(&self.ctx.config.public_api_url, view)
    }
}

#[tonic::async_trait]
impl IntegrationService for IntegrationApi {
    async fn list_integrations(
        &self,
        request: Request<ListIntegrationsRequest>,
    ) -> Result<Response<ListIntegrationsResponse>, Status> {
        respond(
            async {
                let views = list_as_manager(&self.ctx, request.metadata()).await?;
                Ok(ListIntegrationsResponse {
                    integrations: views.into_iter().map(|v| self.to_proto(v)).collect(),
                })
            }
            .await,
        )
    }

    async fn get_integration(
        &self,
        request: Request<GetIntegrationRequest>,
    ) -> Result<Response<Integration>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let id = integration_ref(&request.get_ref().id);
                let view = integrations::get(&self.ctx, &access, &id).await?;
                Ok(self.to_proto(view))
            }
            .await,
        )
    }

    async fn update_integration(
        &self,
        request: Request<UpdateIntegrationRequest>,
    ) -> Result<Response<Integration>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.get_ref();
                let update = settings_update(body)?;
                let id = integration_ref(&body.id);
                let view = integrations::update(&self.ctx, &access, &id, update).await?;
                Ok(self.to_proto(view))
            }
            .await,
        )
    }

    async fn disconnect_integration(
        &self,
        request: Request<DisconnectIntegrationRequest>,
    ) -> Result<Response<DisconnectIntegrationResponse>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let id = integration_ref(&request.get_ref().id);
                crate::disconnect::disconnect(&self.ctx, &access, &id).await?;
                Ok(DisconnectIntegrationResponse {
                    success: true,
                    message: "Integration disconnected successfully".into(),
                })
            }
            .await,
        )
    }
}

fn settings_update(body: &UpdateIntegrationRequest) -> Result<SettingsUpdate, ServiceError> {
    let config_patch = body
        .config_patch_json
        .as_deref()
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|_| ServiceError::invalid_field("config", "must be a JSON object"))
        })
        .transpose()?;
    if body.clear_sync_frequency && body.sync_frequency.is_some() {
        return Err(ServiceError::invalid_field(
            "syncFrequency",
            "set a value or clear it, not both",
        ));
    }
    let sync_frequency = if body.clear_sync_frequency {
        Some(None)
    } else {
        body.sync_frequency.map(Some)
    };
    Ok(SettingsUpdate {
        config_patch,
        sync_enabled: body.sync_enabled,
        sync_frequency,
    })
}

/// The proto item: secrets never appear; a provider without record uses its name as id.
pub(crate) fn to_proto(public_api_url: &url::Url, view: IntegrationView) -> Integration {
    let base = public_api_url.as_str().trim_end_matches('/');
    let provider = &view.provider;
    match view.record {
        None => Integration {
            id: provider.name.clone(),
            provider: provider.name.clone(),
            organization_id: view.organization_id,
            connected: false,
            status: None,
            permissions: Vec::new(),
            config_json: "{}".into(),
            sync_enabled: false,
            sync_frequency: None,
            webhook_url: None,
            created_at: None,
            updated_at: None,
            display_name: provider.display_name.clone(),
            account_id: None,
            account_name: None,
        },
        Some(record) => Integration {
            id: record.id.to_string(),
            provider: record.provider.clone(),
            organization_id: record.organization_id,
            connected: record.connected,
            status: record.status.map(|s| s.as_str().to_string()),
            permissions: record.granted_scopes(),
            config_json: record.config.to_string(),
            sync_enabled: record.sync_enabled,
            sync_frequency: record.sync_frequency,
            webhook_url: crate::webhooks::schemes::webhook_path(provider, &record.id)
                .map(|path| format!("{base}{path}")),
            created_at: Some(rfc3339(record.created_at)),
            updated_at: Some(rfc3339(record.updated_at)),
            display_name: provider.display_name.clone(),
            account_id: record.account_id.clone(),
            account_name: record.account_name.clone(),
        },
    }
}
