//! The gRPC server: our services plus the standard health and reflection services, with a
//! health status that follows the database, and graceful shutdown.

use std::{future::Future, time::Duration};

use integrations_proto::v1::{
    integration_service_server::IntegrationServiceServer,
    o_auth_service_server::OAuthServiceServer, webhook_service_server::WebhookServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};

use crate::{
    context::AppContext,
    grpc::{integrations::IntegrationApi, oauth::OAuthApi, webhooks::WebhookApi},
    tokens,
    webhooks::WebhookRuntime,
};

/// Largest ReceiveWebhook message: a 25 MB body plus headers.
const MAX_WEBHOOK_MESSAGE: usize = 32 * 1024 * 1024;

/// How often the health status re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    ctx: AppContext,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(integrations_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(integrations_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let refresher = tokens::spawn_background_refresh(ctx.clone());
    let db = ctx.db.clone();
    let watcher = tokio::spawn(async move {
        let mut was_up = None;
        loop {
            let up = db.ping().await.is_ok();
            if was_up != Some(up) {
                if up {
                    reporter
                        .set_serving::<IntegrationServiceServer<IntegrationApi>>()
                        .await;
                    reporter
                        .set_service_status("", tonic_health::ServingStatus::Serving)
                        .await;
                } else {
                    tracing::warn!("database unreachable: health is NOT_SERVING");
                    reporter
                        .set_not_serving::<IntegrationServiceServer<IntegrationApi>>()
                        .await;
                    reporter
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                }
                was_up = Some(up);
            }
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    });

    let webhooks = WebhookRuntime::start(ctx.db.clone());
    let result = Server::builder()
        .trace_fn(crate::grpc::rpc_span)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IntegrationServiceServer::new(IntegrationApi::new(
            ctx.clone(),
        )))
        .add_service(OAuthServiceServer::new(OAuthApi::new(ctx.clone())))
        .add_service(
            WebhookServiceServer::new(WebhookApi::new(ctx, webhooks.clone()))
                .max_decoding_message_size(MAX_WEBHOOK_MESSAGE),
        )
        // No Nagle: small HTTP/2 frames (headers, trailers) would otherwise wait for the peer's
        // delayed ACK, adding ~40 ms to answers.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    watcher.abort();
    webhooks.shutdown();
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    Ok(result?)
}
