//! Internal callers of `GetAccessToken`, alternating between the replicas, each answer
//! recorded with its time. The token they ask for expires quickly at the fake provider, so
//! the replicas keep refreshing it while they are killed and restarted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use integrations_proto::v1::{o_auth_service_client::OAuthServiceClient, GetAccessTokenRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::authorized;

/// One call: when it was answered and what it answered (the token and its expiry, or the
/// status code).
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub answered_at: DateTime<Utc>,
    pub result: Result<(String, Option<DateTime<Utc>>), tonic::Code>,
}

pub struct CallPlan {
    pub replicas: Vec<String>,
    pub service_token: String,
    pub organization_id: i64,
    pub integration: String,
    pub callers: usize,
    pub pause: Duration,
}

/// Runs the callers until `stop`; answers every call.
pub async fn run(plan: CallPlan, stop: CancellationToken) -> anyhow::Result<Vec<TokenCall>> {
    let channels: Vec<Channel> = super::replica_endpoints(&plan.replicas)?
        .into_iter()
        .map(|endpoint| endpoint.timeout(Duration::from_secs(60)).connect_lazy())
        .collect();
    let plan = std::sync::Arc::new(plan);
    let handles: Vec<_> = (0..plan.callers)
        .map(|index| {
            let channels = channels.clone();
            let plan = plan.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut calls = Vec::new();
                let mut n = index;
                while !stop.is_cancelled() {
                    let mut client = OAuthServiceClient::new(channels[n % channels.len()].clone());
                    n += 1;
                    let mut request = authorized(
                        &plan.service_token,
                        GetAccessTokenRequest {
                            id: plan.integration.clone(),
                        },
                    );
                    if let Ok(org) = plan.organization_id.to_string().parse() {
                        request.metadata_mut().insert("x-organization-id", org);
                    }
                    let result = client
                        .get_access_token(request)
                        .await
                        .map(|answer| {
                            let answer = answer.into_inner();
                            let expires_at = answer
                                .expires_at
                                .as_deref()
                                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                                .map(|at| at.with_timezone(&Utc));
                            (answer.access_token, expires_at)
                        })
                        .map_err(|status| status.code());
                    calls.push(TokenCall {
                        answered_at: Utc::now(),
                        result,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(plan.pause) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                calls
            })
        })
        .collect();
    let mut all = Vec::new();
    for handle in handles {
        all.append(&mut handle.await?);
    }
    Ok(all)
}
