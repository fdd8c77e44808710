//! The entry of one delivery: the catalog's scheme picks the provider module that verifies
//! the raw bytes and routes it. Kept apart from `receive` (what the schemes share) so the
//! schemes depend on `receive` and only this module depends on the schemes.

use super::{
    asana, bitbucket, discord, github, github_app, gitlab, google, jira, linear, microsoft, notion,
    receive::{Answer, Delivery},
    slack, standard_webhooks, WebhookRuntime,
};
use crate::{
    catalog::WebhookScheme,
    context::AppContext,
    error::{Problem, ServiceError, ServiceResult},
};

/// Verifies and stores one delivery with its provider's scheme.
pub async fn receive(
    ctx: &AppContext,
    runtime: &WebhookRuntime,
    delivery: Delivery,
) -> ServiceResult<Answer> {
    let scheme = ctx
        .catalog
        .get(&delivery.provider)
        .map(|p| p.webhook)
        .unwrap_or_default();
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
        WebhookScheme::None => Err(ServiceError::NotFound(
            Problem::new("Unknown webhook provider")
                .details(format!("{:?} receives no webhooks", delivery.provider)),
        )),
    }
}
