//! The gRPC server: our services plus the standard health and reflection services, with a
//! health status that follows the database (see `app`), and a shutdown that drains within a
//! bounded grace period.

use std::{future::Future, time::Duration};

use integrations_proto::v1::{
    integration_service_server::IntegrationServiceServer,
    o_auth_service_server::OAuthServiceServer, webhook_service_server::WebhookServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};

use crate::{
    app::Application,
    context::AppContext,
    grpc::{integrations::IntegrationApi, oauth::OAuthApi, webhooks::WebhookApi},
};

/// Largest ReceiveWebhook message: a 25 MB body plus headers.
const MAX_WEBHOOK_MESSAGE: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then drains: health NOT_SERVING at once, event streams
/// end with a status, in-flight calls finish — for at most `SHUTDOWN_GRACE_SECS`, after which
/// the remaining connections are dropped — and the background tasks stop.
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

    let grace = ctx.config.shutdown_grace;
    let app = Application::start(ctx, reporter);
    // Connections still open after the grace period are dropped with `server` at the end of
    // this block.
    let result = {
        let server = Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(IntegrationServiceServer::new(IntegrationApi::new(
                app.ctx.clone(),
            )))
            .add_service(OAuthServiceServer::new(OAuthApi::new(app.ctx.clone())))
            .add_service(
                WebhookServiceServer::new(WebhookApi::new(app.ctx.clone(), app.webhooks.clone()))
                    .max_decoding_message_size(MAX_WEBHOOK_MESSAGE),
            )
            // No Nagle: small HTTP/2 frames (headers, trailers) would otherwise wait for the peer's
            // delayed ACK, adding ~40 ms to answers.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                app.draining().cancelled_owned(),
            );
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                app.drain().await;
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(?grace, "grace period over: closing the remaining connections");
                        Ok(())
                    }
                }
            }
        }
    };
    app.stop(Duration::from_secs(5)).await;
    tracing::info!("integration-service stopped");
    Ok(result?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
