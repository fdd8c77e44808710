//! `GET /health`: the gateway is up; reports whether the integration service (and, through its
//! health status, its database) is serving.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

use crate::{http::json, http::HttpResponse, Gateway};

pub(crate) async fn health(gateway: &Gateway) -> HttpResponse {
    let mut client = gateway.upstream.health();
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    let service = match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            _ => "UNKNOWN",
        },
        Ok(Err(_)) | Err(_) => "UNREACHABLE",
    };
    if service == "SERVING" {
        json(
            StatusCode::OK,
            &json!({ "status": "ok", "gateway": "ok", "service": service }),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": "Integration service unavailable",
                "details": format!("integration service status: {service}"),
                "gateway": "ok",
                "service": service,
            }),
        )
    }
}
