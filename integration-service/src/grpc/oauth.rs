//! `integrations.v1.OAuthService`.

use integrations_proto::v1::{
    o_auth_service_server::OAuthService, ArmWebhookHandshakeRequest, CompleteAuthorizationRequest,
    CompleteAuthorizationResponse, GetAccessTokenRequest, GetAccessTokenResponse,
    GetWebhookSettingsRequest, RotateWebhookSecretRequest, SetWebhookSecretRequest,
    StartAuthorizationRequest, StartAuthorizationResponse, WebhookGuide, WebhookHandshakeWindow,
    WebhookSettings,
};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::{authenticated_user, authorize, integration_ref, respond, rfc3339, Need};
use crate::{
    context::AppContext,
    oauth::{self, Callback, Outcome},
    tokens, webhook_settings,
};

pub(crate) struct OAuthApi {
    ctx: AppContext,
}

impl OAuthApi {
    pub(crate) fn new(ctx: AppContext) -> Self {
        Self { ctx }
    }
}

fn settings_to_proto(settings: webhook_settings::WebhookSettings) -> WebhookSettings {
    let guide = settings.guide.clone();
    WebhookSettings {
        guide: Some(WebhookGuide {
            secret_source: guide.secret_source.as_str().to_string(),
            secret_field: guide.secret_field.map(str::to_string),
            signature_header: guide.signature_header.map(str::to_string),
            content_type: guide.content_type.map(str::to_string),
            events: guide.events.iter().map(|e| e.to_string()).collect(),
            steps: guide.steps,
        }),
        previous_secret_expires_at: settings.previous_secret_expires_at().map(rfc3339),
        url: settings.url,
        secret: settings.secret.expose_secret().to_string(),
        previous_secrets_valid_until: settings
            .previous_secrets_valid_until
            .into_iter()
            .map(rfc3339)
            .collect(),
    }
}

#[tonic::async_trait]
impl OAuthService for OAuthApi {
    async fn start_authorization(
        &self,
        request: Request<StartAuthorizationRequest>,
    ) -> Result<Response<StartAuthorizationResponse>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let id = integration_ref(&request.get_ref().id);
                let started = oauth::start_authorization(&self.ctx, &access, &id).await?;
                Ok(StartAuthorizationResponse {
                    redirect_url: started.redirect_url,
                    set_cookie: started.set_cookie,
                })
            }
            .await,
        )
    }

    async fn complete_authorization(
        &self,
        request: Request<CompleteAuthorizationRequest>,
    ) -> Result<Response<CompleteAuthorizationResponse>, Status> {
        let cookie_headers = request
            .metadata()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let completed_by = match request.get_ref().from_frontend {
            true => match authenticated_user(&self.ctx, request.metadata()) {
                Ok(user) => Some(user),
                Err(e) => return respond(Err(e)),
            },
            false => None,
        };
        let body = request.into_inner();
        let set_cookie = oauth::clear_state_cookie(&self.ctx, &body.provider);
        respond(
            async {
                let outcome = oauth::complete_authorization(
                    &self.ctx,
                    Callback {
                        provider: body.provider,
                        code: body.code,
                        state: body.state,
                        error: body.error,
                        installation_id: body.installation_id,
                        cookie_headers,
                        completed_by,
                    },
                )
                .await?;
                Ok(CompleteAuthorizationResponse {
                    redirect_url: outcome.redirect_url(&self.ctx.config.app_url),
                    success: matches!(outcome, Outcome::Connected { .. }),
                    set_cookie,
                })
            }
            .await,
        )
    }

    async fn get_access_token(
        &self,
        request: Request<GetAccessTokenRequest>,
    ) -> Result<Response<GetAccessTokenResponse>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Member).await?;
                let id = integration_ref(&request.get_ref().id);
                let token = tokens::get_access_token(&self.ctx, &access, &id).await?;
                Ok(GetAccessTokenResponse {
                    access_token: token.access_token.expose_secret().to_string(),
                    expires_at: token.expires_at.map(rfc3339),
                    token_type: token.token_type,
                    scopes: token.scopes,
                })
            }
            .await,
        )
    }

    async fn get_webhook_settings(
        &self,
        request: Request<GetWebhookSettingsRequest>,
    ) -> Result<Response<WebhookSettings>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let id = integration_ref(&request.get_ref().id);
                let settings = webhook_settings::get(&self.ctx, &access, &id).await?;
                Ok(settings_to_proto(settings))
            }
            .await,
        )
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<WebhookSettings>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.get_ref();
                let id = integration_ref(&body.id);
                let settings =
                    webhook_settings::rotate(&self.ctx, &access, &id, body.grace_period_seconds)
                        .await?;
                Ok(settings_to_proto(settings))
            }
            .await,
        )
    }

    async fn set_webhook_secret(
        &self,
        request: Request<SetWebhookSecretRequest>,
    ) -> Result<Response<WebhookSettings>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.get_ref();
                let id = integration_ref(&body.id);
                let settings = webhook_settings::set(
                    &self.ctx,
                    &access,
                    &id,
                    &body.secret,
                    body.application_id.as_deref(),
                )
                .await?;
                Ok(settings_to_proto(settings))
            }
            .await,
        )
    }

    async fn arm_webhook_handshake(
        &self,
        request: Request<ArmWebhookHandshakeRequest>,
    ) -> Result<Response<WebhookHandshakeWindow>, Status> {
        respond(
            async {
                let access = authorize(&self.ctx, request.metadata(), Need::Manager).await?;
                let body = request.get_ref();
                let id = integration_ref(&body.id);
                let window =
                    webhook_settings::arm_handshake(&self.ctx, &access, &id, body.window_seconds)
                        .await?;
                Ok(WebhookHandshakeWindow {
                    url: window.url,
                    armed_until: rfc3339(window.armed_until),
                })
            }
            .await,
        )
    }
}
