//! The gRPC server: our services plus the standard health and reflection services, with a
//! health status that follows the database (see `app`), every call counted by method and
//! code (`metrics::grpc_calls`), and a shutdown that drains within a bounded grace period.

use std::{future::Future, time::Duration};

use integrations_proto::v1::{
    integration_service_server::IntegrationServiceServer,
    o_auth_service_server::OAuthServiceServer,
    subscription_service_server::SubscriptionServiceServer,
    webhook_service_server::WebhookServiceServer,
};
use tokio::net::TcpListener;
use tonic::transport::Server;

mod incoming;

use crate::{
    app::Application,
    context::AppContext,
    grpc::{
        integrations::IntegrationApi, oauth::OAuthApi, subscriptions::SubscriptionApi,
        webhooks::WebhookApi,
    },
    metrics::grpc_calls::GrpcMetricsLayer,
};

/// Largest ReceiveWebhook message: a 25 MB body plus headers.
const MAX_WEBHOOK_MESSAGE: usize = 32 * 1024 * 1024;

/// Largest metadata (HTTP/2 header list) of a call.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("GRPC_UNIX_SOCKET {path}: {source}")]
    UnixSocket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serves until `shutdown` resolves, then drains: health NOT_SERVING at once, event streams
/// end with a status, in-flight calls finish — for at most `SHUTDOWN_GRACE_SECS`, after which
/// the remaining connections are dropped — and the background tasks stop.
pub async fn serve(
    ctx: AppContext,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_metrics(ctx, listener, None, shutdown).await
}

/// As `serve`, and `GET /metrics` on `metrics` (the `METRICS_ADDR` listener) while serving.
pub async fn serve_with_metrics(
    ctx: AppContext,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = if ctx.config.grpc_reflection {
        (
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(integrations_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            ),
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(integrations_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1alpha()?,
            ),
        )
    } else {
        (None, None)
    };
    let limits = (
        ctx.config.grpc_max_concurrent_streams,
        ctx.config.grpc_request_timeout,
    );

    let unix = match &ctx.config.grpc_unix_socket {
        Some(path) => Some(
            incoming::bind_unix(path).map_err(|source| ServeError::UnixSocket {
                path: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let grace = ctx.config.shutdown_grace;
    let call_metrics = GrpcMetricsLayer::new(ctx.metrics.clone());
    let app = Application::start(ctx, reporter, metrics).await;
    // Connections still open after the grace period are dropped with `server` at the end of
    // this block.
    let result = {
        let mut builder = Server::builder()
            .max_concurrent_streams(Some(limits.0))
            // Room for session cookies beside the bearer token (the gateway forwards at most
            // 48 KiB of credentials); h2's default is 16 KiB.
            .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES));
        if let Some(timeout) = limits.1 {
            builder = builder.timeout(timeout);
        }
        let server = builder
            .trace_fn(crate::grpc::rpc_span)
            // Outermost: every call is counted with the code its client sees, panics included.
            .layer(call_metrics)
            // A panic in a handler answers INTERNAL (no message of it leaves) and ends nothing
            // else.
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_answer,
            ))
            .add_service(health)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(IntegrationServiceServer::new(IntegrationApi::new(
                app.ctx.clone(),
            )))
            .add_service(OAuthServiceServer::new(OAuthApi::new(app.ctx.clone())))
            .add_service(SubscriptionServiceServer::new(SubscriptionApi::new(
                app.ctx.clone(),
            )))
            .add_service(
                WebhookServiceServer::new(WebhookApi::new(app.ctx.clone(), app.webhooks.clone()))
                    .max_decoding_message_size(MAX_WEBHOOK_MESSAGE),
            )
            .serve_with_incoming_shutdown(
                incoming::incoming(listener, unix),
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

/// The answer to a call whose handler panicked: gRPC `INTERNAL`, nothing of the panic.
fn panic_answer(_panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<String> {
    tracing::error!("a gRPC handler panicked (the panic message is above, from the hook)");
    let mut response = http::Response::new(String::new());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    headers.insert(
        "grpc-message",
        http::HeaderValue::from_static("Internal%20error"),
    );
    response
}

#[cfg(test)]
mod tests {
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    /// The layer `serve` installs, around a handler that panics with a credential in its
    /// message: the call ends as gRPC INTERNAL with a fixed message, nothing of the panic.
    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_nothing_of_the_panic() {
        let handler = ServiceBuilder::new()
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_answer,
            ))
            .service_fn(|request: http::Request<String>| async move {
                if request.uri().path().starts_with('/') {
                    panic!("bug while holding refresh_token=leaked-secret");
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            });
        let response = handler
            .oneshot(http::Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "13");
        assert_eq!(response.headers()["grpc-message"], "Internal%20error");
        assert!(!format!("{:?}", response.headers()).contains("leaked"));
    }
}
