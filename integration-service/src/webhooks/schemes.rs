//! The webhook schemes. Each describes itself in one file of `schemes/` with one [`Scheme`]
//! value: its signature and required headers, the headers it stores, where its secret comes
//! from, its setup guide (route 11), its optional checks, its body limit and `receive`. [`of`]
//! maps the catalog's serde name (`catalog::WebhookScheme`) to that value, once: intake,
//! admission, the guide, webhook settings and subscriptions ask the scheme and name none.
//!
//! Adding a scheme touches three files: its variant in `catalog::WebhookScheme` (the name a
//! catalog entry gives), its file here with its `SCHEME`, and its registration below (the
//! `mod` line and its arm in [`of`]).
//!
//! `github_app` is GitHub's app-level half (no integration in the URL), called by `github`.

use futures::future::BoxFuture;
use uuid::Uuid;

use super::{
    receive::{Answered, Delivery},
    WebhookRuntime,
};
use crate::{
    catalog::{Provider, WebhookScheme},
    context::AppContext,
    error::ServiceResult,
};

pub mod asana;
pub mod bitbucket;
pub mod discord;
pub mod github;
pub mod github_app;
pub mod github_delivery;
pub mod gitlab;
pub mod google;
pub mod jira;
pub mod linear;
pub mod microsoft;
pub mod notion;
pub mod slack;
pub mod standard_webhooks;

/// The scheme of a catalog entry's name (`None`: the provider sends no webhooks we receive).
pub fn of(name: WebhookScheme) -> Option<&'static Scheme> {
    Some(match name {
        WebhookScheme::None => return None,
        WebhookScheme::GithubHmacSha256 => &github::SCHEME,
        WebhookScheme::SlackV0 => &slack::SCHEME,
        WebhookScheme::GitlabToken => &gitlab::SCHEME,
        WebhookScheme::BitbucketHmacSha256 => &bitbucket::SCHEME,
        WebhookScheme::JiraHmacSha256 => &jira::SCHEME,
        WebhookScheme::GooglePushChannel => &google::SCHEME,
        WebhookScheme::MicrosoftGraph => &microsoft::SCHEME,
        WebhookScheme::LinearHmacSha256 => &linear::SCHEME,
        WebhookScheme::StandardWebhooks => &standard_webhooks::SCHEME,
        WebhookScheme::DiscordEd25519 => &discord::SCHEME,
        WebhookScheme::AsanaHook => &asana::SCHEME,
        WebhookScheme::NotionHmacSha256 => &notion::SCHEME,
    })
}

/// The scheme of a provider, if it sends webhooks.
pub fn of_provider(provider: &Provider) -> Option<&'static Scheme> {
    of(provider.webhook)
}

/// Path of the webhook route for an integration, when the provider sends webhooks: the
/// integration's own URL, or the app-level URL of a scheme routed by installation.
pub fn webhook_path(provider: &Provider, integration_id: &Uuid) -> Option<String> {
    let scheme = of_provider(provider)?;
    Some(match scheme.per_integration() {
        true => format!(
            "/api/integrations/{}/webhook/{integration_id}",
            provider.name
        ),
        false => format!("/api/integrations/{}/webhook", provider.name),
    })
}

/// The body limit of the schemes whose payloads are small (1 MiB: room for Slack's large
/// interactivity payloads and Graph's batches).
pub const SMALL_BODY_LIMIT: usize = 1024 * 1024;

/// How a scheme verifies and stores one delivery.
pub type Receive =
    for<'a> fn(&'a AppContext, &'a WebhookRuntime, Delivery) -> BoxFuture<'a, Answered>;

/// One webhook scheme, described in its own file.
pub struct Scheme {
    pub secret: SecretSource,
    pub headers: Headers,
    /// The largest body accepted, when smaller than the gateway's webhook limit (25 MB,
    /// GitHub's): a larger one is refused before it is read (told to the gateway at admission).
    pub body_limit: Option<usize>,
    /// Route 11's guidance.
    pub guide: Guide,
    /// Webhooks are set up by hand at the provider (no API creates them: route 15 refuses).
    pub set_up_by_hand: bool,
    pub checks: Checks,
    pub receive: Receive,
}

impl Scheme {
    /// The base of a scheme delivered to `receive`: a generated secret, no headers or guide
    /// yet, no body limit of its own, no checks, set up through an API. A scheme's `SCHEME`
    /// states its secret source and what else differs from this base.
    pub const fn new(receive: Receive) -> Self {
        Self {
            secret: SecretSource::Generated,
            headers: Headers::NONE,
            body_limit: None,
            guide: Guide::EMPTY,
            set_up_by_hand: false,
            checks: Checks::NONE,
            receive,
        }
    }

    /// Whether deliveries name their integration in the URL (its own secret verifies them);
    /// an app-level secret's deliveries are routed by the account in the payload instead.
    pub fn per_integration(&self) -> bool {
        self.secret != SecretSource::AppConfig
    }
}

/// The headers of a scheme's deliveries (lower case).
pub struct Headers {
    /// The header carrying the signature or token: without it a delivery is unauthenticated
    /// (401). `None` when the credential is in the body (Graph) or the first delivery is an
    /// unsigned handshake (Asana, Notion: their modules refuse an unsigned one that is not).
    pub signature: Option<&'static str>,
    /// Every other header a delivery must carry, checked before the body is read (400).
    pub required: &'static [&'static str],
    /// The header carrying a signed Unix timestamp, checked against our clock (±5 minutes) at
    /// admission and again by the scheme.
    pub timestamp: Option<&'static str>,
    /// The delivery headers kept with the event besides the common ones (never signatures,
    /// tokens or credentials).
    pub stored: &'static [&'static str],
}

/// What a provider-issued secret must look like (`Err`: the 400's details).
pub type SecretCheck = fn(&str) -> Result<(), &'static str>;

impl Headers {
    pub const NONE: Self = Self {
        signature: None,
        required: &[],
        timestamp: None,
        stored: &[],
    };
}

/// The scheme's own checks, each optional.
pub struct Checks {
    pub secret: Option<SecretCheck>,
    /// Whether an application id stored beside the secret is valid (`None`: none is taken).
    pub application_id: Option<fn(&str) -> bool>,
    /// At admission, a delivery naming no integration: whether the app-level URL can take it.
    pub app_level: Option<fn(&AppContext) -> ServiceResult<()>>,
}

impl Checks {
    pub const NONE: Self = Self {
        secret: None,
        application_id: None,
        app_level: None,
    };
}

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

/// What route 11 tells a person setting the scheme up: data, never a secret.
pub struct Guide {
    /// Events worth subscribing to (every event is stored as it comes).
    pub events: &'static [&'static str],
    /// What to do, in order: `{url}` stands for the webhook URL, `{name}` for the provider's.
    pub steps: &'static [&'static str],
    /// The provider's field the secret is pasted into (`None`: nothing to paste there).
    pub secret_field: Option<&'static str>,
    /// The header we verify, as the provider writes it (`None`: the credential is in the body).
    pub signature_header: Option<&'static str>,
    /// The content type to choose at the provider (`None`: the provider sends no body).
    pub content_type: Option<&'static str>,
}

impl Guide {
    const EMPTY: Self = Self {
        events: &[],
        steps: &[],
        secret_field: None,
        signature_header: None,
        content_type: None,
    };
}
