//! What route 11 (`GET /api/integrations/{id}/webhook`) tells a person setting a provider's
//! webhook up: where the secret comes from, which provider field it goes into, the header we
//! check, the content type, the events worth subscribing to, and the steps. Data keyed by the
//! catalog's scheme, so a provider added through `PROVIDERS_FILE` gets its scheme's guide.
//!
//! Invariant: a guide never carries a secret; the secret travels in `WebhookSettings.secret`.

use crate::catalog::{Provider, WebhookScheme};

/// Where an integration's webhook secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// We generate it (route 11 shows it; rotate it with `POST .../webhook/rotate`).
    Generated,
    /// The provider issues it; an Owner/Admin stores it with `PUT .../webhook`.
    ProviderIssued,
    /// The provider sends it in a handshake, accepted while armed (`POST .../webhook/handshake`).
    Handshake,
    /// One secret for the whole app, in the service's configuration.
    AppConfig,
}

impl SecretSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::ProviderIssued => "provider_issued",
            Self::Handshake => "handshake",
            Self::AppConfig => "app_config",
        }
    }
}

/// Route 11's guidance for one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookGuide {
    pub secret_source: SecretSource,
    /// The provider's field the secret is pasted into (`None`: nothing to paste there).
    pub secret_field: Option<&'static str>,
    /// The header we verify (`None`: the credential is in the body, e.g. Graph's clientState).
    pub signature_header: Option<&'static str>,
    /// The content type to choose at the provider (`None`: the provider sends no body).
    pub content_type: Option<&'static str>,
    /// Events worth subscribing to (every event is stored as it comes).
    pub events: &'static [&'static str],
    /// What to do, in order; `{url}` stands for the webhook URL.
    pub steps: Vec<String>,
}

/// The guide of `provider`'s scheme, its steps naming `url`.
pub fn guide(provider: &Provider, url: &str) -> WebhookGuide {
    let name = &provider.name;
    match provider.webhook {
        WebhookScheme::None => make(SecretSource::Generated, None, None, None, &[], Vec::new()),
        WebhookScheme::GithubHmacSha256 => make(
            SecretSource::Generated,
            Some("Secret"),
            Some("X-Hub-Signature-256"),
            Some("application/json"),
            &["push", "pull_request", "issues"],
            vec![
                "Repository (or organization) → Settings → Webhooks → Add webhook".into(),
                format!("Payload URL: {url}; Content type: application/json; Secret: the secret shown here"),
                "A GitHub App instead: its webhook URL is /api/integrations/github/webhook with GITHUB_APP_WEBHOOK_SECRET, routed by installation".into(),
            ],
        ),
        WebhookScheme::SlackV0 => make(
            SecretSource::AppConfig,
            None,
            Some("X-Slack-Signature"),
            Some("application/json"),
            &["app_mention", "message.channels", "app_uninstalled", "tokens_revoked"],
            vec![
                format!("Slack app settings → Event Subscriptions, Slash Commands and Interactivity: Request URL {url}"),
                "The app's Signing Secret goes in SLACK_SIGNING_SECRET (service configuration)".into(),
            ],
        ),
        WebhookScheme::GitlabToken => make(
            SecretSource::Generated,
            Some("Secret token"),
            Some("X-Gitlab-Token"),
            Some("application/json"),
            &["Push events", "Merge request events", "Issues events"],
            vec![
                "Project (or group) → Settings → Webhooks → Add new webhook".into(),
                format!("URL: {url}; Secret token: the secret shown here"),
            ],
        ),
        WebhookScheme::BitbucketHmacSha256 => make(
            SecretSource::Generated,
            Some("Secret"),
            Some("X-Hub-Signature"),
            Some("application/json"),
            &["repo:push", "pullrequest:created", "issue:created"],
            vec![
                "Repository settings → Webhooks → Add webhook".into(),
                format!("URL: {url}; Secret: the secret shown here"),
            ],
        ),
        WebhookScheme::JiraHmacSha256 => make(
            SecretSource::Generated,
            Some("Secret"),
            Some("X-Hub-Signature"),
            Some("application/json"),
            &["jira:issue_created", "jira:issue_updated", "comment_created"],
            vec![
                "Jira settings → System → WebHooks → Create a WebHook".into(),
                format!("URL: {url}; Secret: the secret shown here"),
            ],
        ),
        WebhookScheme::GooglePushChannel => make(
            SecretSource::Generated,
            Some("token"),
            Some("X-Goog-Channel-Token"),
            None,
            &["sync", "add", "update", "remove", "trash", "change"],
            vec![format!(
                "Open a channel (files.watch, changes.watch or events.watch): type web_hook, address {url}, token: the secret shown here"
            )],
        ),
        WebhookScheme::MicrosoftGraph => make(
            SecretSource::Generated,
            Some("clientState"),
            None,
            Some("application/json"),
            &["created", "updated", "deleted"],
            vec![format!(
                "POST /subscriptions: notificationUrl and lifecycleNotificationUrl {url}, clientState: the secret shown here"
            )],
        ),
        WebhookScheme::LinearHmacSha256 => make(
            SecretSource::ProviderIssued,
            None,
            Some("Linear-Signature"),
            Some("application/json"),
            &["Issue", "Comment", "Project"],
            vec![
                format!("Linear → Settings → API → Webhooks → New webhook: URL {url}"),
                format!("Copy Linear's signing secret into PUT /api/integrations/{name}/webhook {{\"secret\": ...}}"),
            ],
        ),
        WebhookScheme::StandardWebhooks => make(
            SecretSource::ProviderIssued,
            None,
            Some("webhook-signature"),
            Some("application/json"),
            &[],
            vec![
                format!("Register the endpoint {url} at the sender"),
                format!("Copy its whsec_ secret into PUT /api/integrations/{name}/webhook {{\"secret\": ...}}"),
            ],
        ),
        WebhookScheme::DiscordEd25519 => make(
            SecretSource::ProviderIssued,
            None,
            Some("X-Signature-Ed25519"),
            Some("application/json"),
            &["APPLICATION_AUTHORIZED", "ENTITLEMENT_CREATE"],
            vec![
                format!("Copy the app's Public Key and Application ID (Developer Portal → General Information) into PUT /api/integrations/{name}/webhook {{\"secret\": \"<public key>\", \"applicationId\": \"<id>\"}}"),
                format!("Then set Interactions Endpoint URL (and Webhooks → Endpoint URL) to {url}"),
            ],
        ),
        WebhookScheme::AsanaHook => make(
            SecretSource::Handshake,
            None,
            Some("X-Hook-Signature"),
            Some("application/json"),
            &["task.added", "task.changed", "story.added"],
            vec![
                format!("Open the handshake window: POST /api/integrations/{name}/webhook/handshake"),
                format!("Within it, create the webhook (POST /webhooks) with target {url}; Asana's X-Hook-Secret is stored and echoed"),
            ],
        ),
        WebhookScheme::NotionHmacSha256 => make(
            SecretSource::Handshake,
            Some("Verification token"),
            Some("X-Notion-Signature"),
            Some("application/json"),
            &["page.created", "page.content_updated", "comment.created"],
            vec![
                format!("Open the handshake window: POST /api/integrations/{name}/webhook/handshake"),
                format!("Within it, create the subscription (integration settings → Webhooks) with URL {url}"),
                "Paste the verification token then shown here into Notion's Verify dialog".into(),
            ],
        ),
    }
}

fn make(
    secret_source: SecretSource,
    secret_field: Option<&'static str>,
    signature_header: Option<&'static str>,
    content_type: Option<&'static str>,
    events: &'static [&'static str],
    steps: Vec<String>,
) -> WebhookGuide {
    WebhookGuide {
        secret_source,
        secret_field,
        signature_header,
        content_type,
        events,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn every_provider_that_sends_webhooks_has_a_guide_naming_its_url() {
        let catalog = Catalog::load(None).unwrap();
        for provider in catalog.iter() {
            let guide = guide(provider, "https://api.example/hook");
            if provider.webhook == WebhookScheme::None {
                continue;
            }
            assert!(
                guide
                    .steps
                    .iter()
                    .any(|s| s.contains("https://api.example/hook")),
                "{}",
                provider.name
            );
            let expected = if provider.webhook == WebhookScheme::SlackV0 {
                SecretSource::AppConfig
            } else if provider.webhook.handshake_secret() {
                SecretSource::Handshake
            } else if provider.webhook.provider_issued_secret() {
                SecretSource::ProviderIssued
            } else {
                SecretSource::Generated
            };
            assert_eq!(guide.secret_source, expected, "{}", provider.name);
            assert_eq!(
                guide
                    .signature_header
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                provider
                    .webhook
                    .signature_header()
                    .or(match provider.webhook {
                        WebhookScheme::AsanaHook => Some("x-hook-signature"),
                        WebhookScheme::NotionHmacSha256 => Some("x-notion-signature"),
                        _ => None,
                    }),
                "{}",
                provider.name
            );
        }
    }
}
