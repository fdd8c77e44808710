//! The entry of one delivery: the catalog's scheme picks the provider module that verifies
//! the raw bytes and routes it. Kept apart from `receive` (what the schemes share) so the
//! schemes depend on `receive` and only this module depends on the schemes.
//!
//! Every delivery's outcome is counted here, once, by provider (`webhook_deliveries_total`):
//! a scheme added later is counted without a line of its own.

use super::{
    receive::{Answer, Delivery},
    schemes::{
        asana, bitbucket, discord, github, github_app, gitlab, google, jira, linear, microsoft,
        notion, slack, standard_webhooks,
    },
    WebhookRuntime,
};
use crate::{
    catalog::WebhookScheme,
    context::AppContext,
    error::{ServiceError, ServiceResult},
    metrics::DeliveryOutcome,
};

/// Verifies and stores one delivery with its provider's scheme, and counts its outcome.
pub async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let provider = ctx.catalog.get(&delivery.provider);
    // A catalog name, never the URL's text: the label stays bounded.
    let label = provider.map_or("unknown", |p| p.name.as_str());
    let scheme = provider.map(|p| p.webhook).unwrap_or_default();
    let runtime = runtime.for_delivery();
    let result = match scheme.body_limit() {
        // The gateway refuses these before reading them; a direct gRPC caller here.
        Some(limit) if delivery.body.len() > limit => Err(ServiceError::TooLarge(
            crate::error::Problem::new("Request body too large")
                .details(format!("at most {limit} bytes")),
        )),
        _ => receive_with(ctx, &runtime, scheme, delivery).await,
    };
    let outcome = match &result {
        Ok(_) => match runtime.tally().counts() {
            (0, _) => DeliveryOutcome::Handshake,
            (stored, duplicates) if duplicates == stored => DeliveryOutcome::Duplicate,
            _ => DeliveryOutcome::Accepted,
        },
        Err(err) => DeliveryOutcome::of_error(err),
    };
    ctx.metrics.webhook_delivery(label, outcome);
    result
}

async fn receive_with(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    scheme: WebhookScheme,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    match scheme {
        // No integration in the URL: the GitHub App's app-level delivery.
        WebhookScheme::GithubHmacSha256 if delivery.integration_id.is_none() => {
            github_app::receive(ctx, runtime, delivery).await
        }
        WebhookScheme::GithubHmacSha256 => github::receive(ctx, runtime, delivery).await,
        WebhookScheme::SlackV0 => slack::receive(ctx, runtime, delivery).await,
        WebhookScheme::GitlabToken => gitlab::receive(ctx, runtime, delivery).await,
        WebhookScheme::BitbucketHmacSha256 => bitbucket::receive(ctx, runtime, delivery).await,
        WebhookScheme::JiraHmacSha256 => jira::receive(ctx, runtime, delivery).await,
        WebhookScheme::GooglePushChannel => google::receive(ctx, runtime, delivery).await,
        WebhookScheme::MicrosoftGraph => microsoft::receive(ctx, runtime, delivery).await,
        WebhookScheme::LinearHmacSha256 => linear::receive(ctx, runtime, delivery).await,
        WebhookScheme::StandardWebhooks => standard_webhooks::receive(ctx, runtime, delivery).await,
        WebhookScheme::DiscordEd25519 => discord::receive(ctx, runtime, delivery).await,
        WebhookScheme::AsanaHook => asana::receive(ctx, runtime, delivery).await,
        WebhookScheme::NotionHmacSha256 => notion::receive(ctx, runtime, delivery).await,
        WebhookScheme::None => Err(ServiceError::not_found("Unknown webhook provider")
            .with_details(format!("{:?} receives no webhooks", delivery.provider))),
    }
}
