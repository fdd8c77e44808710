//! What a subscription is at a provider, apart from its row: the webhook to set up
//! (`HookSpec`: the URL route 11 hands out, the events, the integration's secret and its
//! digest), what a provider answered (`Created`, `Checked`), and `Target` — what is watched,
//! parsed in the provider's resource syntax, and the one dispatch over the provider API
//! clients (`github.rs`, ...): create, delete, check, set up again after a rotation. Also the
//! checks of what a caller may ask for: the resource, the events, the scope the grant needs.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{
    api::{ApiClient, ApiError},
    asana, bitbucket, github, gitlab, google, jira, linear, manual_only, microsoft, set_up_by_hand,
};
use crate::{
    catalog::Provider,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    store::entities::integration,
};

/// Longest `resource`.
const MAX_RESOURCE: usize = 512;
/// Most events per subscription, and longest event name.
const MAX_EVENTS: usize = 64;
const MAX_EVENT_NAME: usize = 100;

/// What a provider answered to a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Created {
    pub provider_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Google: the channel's `resourceId`, needed to stop it.
    pub channel_resource_id: Option<String>,
    /// Linear: the signing secret it issued (asked with `HookSpec::provider_issues_secret`).
    pub issued_secret: Option<linear::IssuedSecret>,
}

/// The webhook to create: where it delivers, what, and the secret it signs with.
pub(crate) struct HookSpec<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a SecretString,
    /// Linear: let the provider issue the secret (the integration's first webhook) rather
    /// than send ours (its later ones, which reuse the secret it issued).
    pub provider_issues_secret: bool,
}

/// What a subscription watches, per provider: the one dispatch over the API clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Asana(asana::Target),
    Bitbucket(bitbucket::Target),
    Github(github::Target),
    Gitlab(gitlab::Target),
    Google(google::Target),
    Jira(jira::Target),
    Linear(linear::Target),
    Microsoft(microsoft::Target),
}

/// What the renewer learned at the provider about a subscription that came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Renewed until this expiry.
    Renewed(DateTime<Utc>),
    /// It never expires and still exists.
    Present,
    /// Gone at the provider (deleted behind our back, or removed): to be created again.
    Missing,
    /// Google: a new channel opened; the old one is to be stopped once it is stored.
    Replaced(Created),
}

impl Checked {
    /// `Present` when the webhook exists at the provider, else `Missing`.
    pub(super) fn presence(exists: bool) -> Self {
        if exists {
            Self::Present
        } else {
            Self::Missing
        }
    }

    /// A provider's 404 means the webhook is gone: to be created again.
    pub(super) fn gone_is_missing(answer: Result<Self, ApiError>) -> Result<Self, ApiError> {
        match answer {
            Err(ApiError::NotFound) => Ok(Self::Missing),
            other => other,
        }
    }
}

impl Target {
    /// Parses `resource` in `provider`'s syntax; a provider without an API client here (or
    /// whose webhooks are set up by hand) is a 400 saying so.
    pub(super) fn parse(
        provider: &Provider,
        record: &integration::Model,
        resource: &str,
    ) -> ServiceResult<Self> {
        if manual_only(provider, Some(record)) {
            return Err(set_up_by_hand(provider));
        }
        match provider.name.as_str() {
            "asana" => asana::parse(resource).map(Self::Asana),
            "bitbucket" => bitbucket::parse(resource).map(Self::Bitbucket),
            "github" => github::parse(resource).map(Self::Github),
            "gitlab" => gitlab::parse(resource).map(Self::Gitlab),
            "google" => google::parse(resource).map(Self::Google),
            "atlassian" => jira::parse(resource).map(Self::Jira),
            "linear" => linear::parse(resource).map(Self::Linear),
            "microsoft" => microsoft::parse(resource).map(Self::Microsoft),
            _ => Err(ServiceError::invalid("Subscriptions are not available for this provider")
                .with_details(format!(
                    "{} subscriptions are not supported yet; set the webhook up by hand with GET /api/integrations/{{id}}/webhook",
                    provider.display_name
                ))),
        }
    }

    pub(super) fn required_scope(&self) -> Option<&'static str> {
        match self {
            Self::Github(target) => Some(target.required_scope()),
            Self::Gitlab(_) => Some(gitlab::REQUIRED_SCOPE),
            Self::Bitbucket(_) => Some(bitbucket::REQUIRED_SCOPE),
            Self::Jira(_) => Some(jira::REQUIRED_SCOPE),
            Self::Asana(_) | Self::Google(_) | Self::Linear(_) | Self::Microsoft(_) => None,
        }
    }

    pub(super) fn default_events(&self) -> Vec<String> {
        match self {
            Self::Github(_) => github::default_events(),
            Self::Gitlab(_) => gitlab::default_events(),
            Self::Bitbucket(_) => bitbucket::default_events(),
            Self::Google(_) => google::default_events(),
            Self::Jira(_) => jira::default_events(),
            Self::Linear(_) => linear::default_events(),
            Self::Asana(_) => asana::default_events(),
            Self::Microsoft(target) => target.default_events(),
        }
    }

    /// Events this provider does not know are a 400.
    pub(super) fn validate_events(&self, events: &[String]) -> ServiceResult<()> {
        match self {
            Self::Github(_) => Ok(()),
            Self::Gitlab(_) => gitlab::validate_events(events),
            Self::Bitbucket(_) => bitbucket::validate_events(events),
            Self::Asana(_) if events == asana::default_events() => Ok(()),
            Self::Asana(_) => Err(ServiceError::invalid_field(
                "events",
                "Asana webhooks send every change of the resource: leave events out",
            )),
            Self::Google(_) if events == google::default_events() => Ok(()),
            Self::Google(_) => Err(ServiceError::invalid_field(
                "events",
                "Google channels notify every change: leave events out",
            )),
            Self::Jira(_) => jira::validate_events(events),
            Self::Linear(_) => linear::validate_events(events),
            Self::Microsoft(_) => microsoft::validate_events(events),
        }
    }

    pub(super) fn client<'a>(
        &self,
        ctx: &'a AppContext,
        provider: &'a str,
        token: SecretString,
    ) -> ApiClient<'a> {
        let (prefix, base) = match self {
            Self::Github(_) => ("GITHUB", github::DEFAULT_API_URL),
            Self::Gitlab(_) => ("GITLAB", gitlab::DEFAULT_API_URL),
            Self::Bitbucket(_) => ("BITBUCKET", bitbucket::DEFAULT_API_URL),
            Self::Google(_) => ("GOOGLE", google::DEFAULT_API_URL),
            Self::Jira(_) => ("ATLASSIAN", jira::DEFAULT_API_URL),
            Self::Linear(_) => ("LINEAR", linear::DEFAULT_API_URL),
            Self::Asana(_) => ("ASANA", asana::DEFAULT_API_URL),
            Self::Microsoft(_) => ("MICROSOFT", microsoft::DEFAULT_API_URL),
        };
        ApiClient::new(&ctx.config, &ctx.metrics, provider, prefix, base, token)
    }

    pub(super) async fn create(
        &self,
        api: &ApiClient<'_>,
        hook: &HookSpec<'_>,
    ) -> Result<Created, ApiError> {
        match self {
            Self::Github(target) => github::create(api, target, hook).await,
            Self::Gitlab(target) => gitlab::create(api, target, hook).await,
            Self::Bitbucket(target) => bitbucket::create(api, target, hook).await,
            Self::Google(target) => google::watch(api, target, hook).await,
            Self::Jira(target) => jira::create(api, target, hook).await,
            Self::Linear(target) => linear::create(api, target, hook).await,
            Self::Asana(target) => asana::create(api, target, hook).await,
            Self::Microsoft(target) => microsoft::create(api, target, hook).await,
        }
    }

    pub(super) async fn delete(
        &self,
        api: &ApiClient<'_>,
        provider_id: &str,
        channel_resource_id: Option<&str>,
    ) -> Result<(), ApiError> {
        match self {
            Self::Github(target) => github::delete(api, target, provider_id).await,
            Self::Gitlab(target) => gitlab::delete(api, target, provider_id).await,
            Self::Linear(_) => linear::delete(api, provider_id).await,
            Self::Jira(_) => jira::delete(api, provider_id).await,
            Self::Asana(_) => asana::delete(api, provider_id).await,
            Self::Bitbucket(target) => bitbucket::delete(api, target, provider_id).await,
            Self::Google(target) => {
                google::stop(
                    api,
                    target,
                    provider_id,
                    channel_resource_id.unwrap_or_default(),
                )
                .await
            }
            Self::Microsoft(_) => microsoft::delete(api, provider_id).await,
        }
    }

    /// Deletes the target's webhooks that deliver to `url` but are not `keep`: webhooks we no
    /// longer own (a crashed create's). GitHub only, so far.
    pub(super) async fn remove_strays(
        &self,
        api: &ApiClient<'_>,
        url: &str,
        keep: Option<&str>,
    ) -> Result<usize, ApiError> {
        match self {
            Self::Github(target) => github::remove_others(api, target, url, keep).await,
            _ => Ok(0),
        }
    }

    /// Whether a subscription that expires is also checked every reconciliation interval (a
    /// Jira webhook lives 30 days: waiting for 75 % of that to find one deleted behind our
    /// back would be too long; a check refreshes it, which costs nothing). Graph's and
    /// Google's are checked only when their renewal is due (a Google check opens a channel).
    pub(crate) fn reconciled_before_renewal(&self) -> bool {
        matches!(self, Self::Jira(_))
    }

    /// Whether the provider signs (or authenticates) deliveries with the integration's own
    /// secret, which a rotation replaces at the provider: GitHub, GitLab, Bitbucket (the
    /// hook's secret or token), Graph (`clientState`), Google (the channel token). Not Linear
    /// (it issues its own), Asana (its handshake's), Jira (the app's JWT).
    pub(crate) fn signs_with_our_secret(&self) -> bool {
        matches!(
            self,
            Self::Github(_)
                | Self::Gitlab(_)
                | Self::Bitbucket(_)
                | Self::Microsoft(_)
                | Self::Google(_)
        )
    }

    /// Sets the webhook up again with `hook`'s secret, after a rotation: GitHub, GitLab and
    /// Bitbucket update the hook in place (`Present`); Graph cannot change a subscription's
    /// `clientState`, so a new subscription replaces it (`Replaced`, the old one deleted once
    /// the new one is stored); Google opens a new channel, as its renewal always does.
    pub(super) async fn rekey(
        &self,
        api: &ApiClient<'_>,
        provider_id: &str,
        hook: &HookSpec<'_>,
    ) -> Result<Checked, ApiError> {
        let answer = match self {
            Self::Github(target) => github::update(api, target, provider_id, hook)
                .await
                .map(|()| Checked::Present),
            Self::Gitlab(target) => gitlab::update(api, target, provider_id, hook)
                .await
                .map(|()| Checked::Present),
            Self::Bitbucket(target) => bitbucket::update(api, target, provider_id, hook)
                .await
                .map(|()| Checked::Present),
            Self::Microsoft(target) => microsoft::create(api, target, hook)
                .await
                .map(Checked::Replaced),
            _ => return self.check(api, provider_id, hook).await,
        };
        Checked::gone_is_missing(answer)
    }

    /// The renewer's call when a subscription comes due: renews one that expires, checks
    /// that one that never expires still exists.
    pub(super) async fn check(
        &self,
        api: &ApiClient<'_>,
        provider_id: &str,
        hook: &HookSpec<'_>,
    ) -> Result<Checked, ApiError> {
        let answer = match self {
            Self::Google(target) => google::watch(api, target, hook)
                .await
                .map(Checked::Replaced),
            Self::Bitbucket(target) => bitbucket::exists(api, target, provider_id)
                .await
                .map(Checked::presence),
            Self::Asana(_) => asana::exists(api, provider_id).await.map(Checked::presence),
            Self::Linear(_) => linear::exists(api, provider_id)
                .await
                .map(Checked::presence),
            Self::Gitlab(target) => gitlab::exists(api, target, provider_id)
                .await
                .map(Checked::presence),
            Self::Github(target) => github::exists(api, target, provider_id)
                .await
                .map(Checked::presence),
            Self::Microsoft(target) => microsoft::renew(api, target, provider_id)
                .await
                .map(Checked::Renewed),
            // Looked up first: a refresh names no webhook it could not find.
            Self::Jira(_) => match jira::exists(api, provider_id).await {
                Ok(true) => jira::renew(api, provider_id).await.map(Checked::Renewed),
                Ok(false) => Ok(Checked::Missing),
                Err(e) => Err(e),
            },
        };
        Checked::gone_is_missing(answer)
    }
}

/// A short digest of a webhook secret (the first 16 hex digits of its SHA-256): enough to tell
/// that the secret changed, nothing to sign with. The secrets are random and long, so the
/// digest says nothing about them.
pub(crate) fn secret_digest(secret: &SecretString) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secrecy::ExposeSecret::expose_secret(secret).as_bytes());
    hex::encode(&digest[..8])
}

/// Where the provider delivers: route 11's URL of the integration.
pub(crate) fn webhook_url(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
) -> ServiceResult<String> {
    let path = crate::webhooks::schemes::webhook_path(provider, &record.id)
        .ok_or_else(|| ServiceError::invalid("This provider sends no webhooks"))?;
    Ok(format!(
        "{}{path}",
        ctx.config.public_api_url.as_str().trim_end_matches('/')
    ))
}

/// The integration's current webhook secret, which the provider signs deliveries with.
pub(crate) fn webhook_secret(
    ctx: &AppContext,
    record: &integration::Model,
) -> ServiceResult<SecretString> {
    let stored = record.webhook_secret.as_deref().ok_or_else(|| {
        ServiceError::failed_precondition("No webhook secret")
            .with_details("the integration has no webhook secret; reconnect it")
    })?;
    ctx.keyring
        .open(SecretColumn::WebhookSecret, record.id, stored)
        .map_err(|e| {
            ServiceError::internal_caused(format!("integration {} webhook_secret", record.id), e)
        })
}

/// A 400 naming the scope the grant lacks.
pub(super) fn require_scope(
    provider: &Provider,
    record: &integration::Model,
    scope: &str,
) -> ServiceResult<()> {
    if record
        .permissions
        .as_ref()
        .is_some_and(|granted| granted.contains(scope))
    {
        return Ok(());
    }
    Err(
        ServiceError::invalid("Missing OAuth scope").with_details(format!(
            "the {} grant lacks the {scope} scope; authorize the integration again to grant it",
            provider.display_name
        )),
    )
}

pub(super) fn validate_resource(resource: &str) -> ServiceResult<()> {
    if resource.is_empty() {
        return Err(ServiceError::invalid_field("resource", "required"));
    }
    if resource.len() > MAX_RESOURCE || resource.chars().any(char::is_control) {
        return Err(ServiceError::invalid_field(
            "resource",
            format!("at most {MAX_RESOURCE} printable characters"),
        ));
    }
    Ok(())
}

pub(super) fn validate_events(events: Vec<String>) -> ServiceResult<Vec<String>> {
    if events.len() > MAX_EVENTS {
        return Err(ServiceError::invalid_field(
            "events",
            format!("at most {MAX_EVENTS} events"),
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        let event = event.trim().to_string();
        let valid = !event.is_empty()
            && event.len() <= MAX_EVENT_NAME
            && event.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'*' | b'-' | b'/')
            });
        if !valid {
            return Err(ServiceError::invalid_field(
                "events",
                format!("event names are 1 to {MAX_EVENT_NAME} of A-Z a-z 0-9 _ . : * - /"),
            ));
        }
        if !unique.contains(&event) {
            unique.push(event);
        }
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_validated_and_deduplicated() {
        assert_eq!(
            validate_events(vec!["push".into(), " push ".into(), "pull_request".into()]).unwrap(),
            vec!["push".to_string(), "pull_request".to_string()]
        );
        for bad in ["", "a b", "<script>", &"x".repeat(101)] {
            assert!(validate_events(vec![bad.to_string()]).is_err(), "{bad:?}");
        }
        assert!(validate_events(vec!["e".to_string(); MAX_EVENTS + 1]).is_err());
    }

    #[test]
    fn resources_are_bounded_and_printable() {
        assert!(validate_resource("o/r").is_ok());
        assert!(validate_resource("").is_err());
        assert!(validate_resource("o/\u{7}r").is_err());
        assert!(validate_resource(&"r".repeat(MAX_RESOURCE + 1)).is_err());
    }
}
