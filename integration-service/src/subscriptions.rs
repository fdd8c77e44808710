//! Provider webhook subscriptions (route 15): the service creates the webhook at the provider
//! through its API with the integration's token, owns it from then on, and deletes it on
//! request or at disconnect.
//!
//! Invariants:
//! - one live subscription per (integration, resource): the row is inserted PENDING first
//!   (a unique partial index decides between concurrent creates), and only its inserter
//!   calls the provider — creating again answers the existing row, one webhook stays;
//! - every provider call happens outside any transaction, under the subscription's committed
//!   lease (`store::subscriptions`), with the integration's valid token (`tokens`), counted
//!   in `provider_requests_total{endpoint="subscriptions"}`;
//! - disconnect deletes every subscription at the provider (404 counts as done) before the
//!   tokens are erased; one the provider would not delete stays FAILED with the reason
//!   rather than being forgotten;
//! - providers whose webhooks are set up by hand (Slack, Discord, Notion, a GitHub App)
//!   answer 400 and route 11's guide stays the way.
//!
//! One file per provider API (`github.rs`, ...); `Target` is the one dispatch over them.

pub mod api;
pub mod asana;
pub mod bitbucket;
pub mod github;
pub mod gitlab;
pub mod google;
pub mod jira;
pub mod linear;
pub mod microsoft;
pub mod renewer;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::{
    access::Access,
    catalog::Provider,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    store::{
        self,
        entities::{
            integration,
            webhook_subscription::{Model, SubscriptionState},
        },
        subscriptions::{NewSubscription, ProviderState},
        text_list,
    },
    tokens,
};
use api::{ApiClient, ApiError};

/// How long a create, renewal or delete may hold a subscription (the provider call is
/// bounded at 10 s by the shared HTTP client; a crashed holder's lease simply expires).
pub const LEASE: Duration = Duration::from_secs(60);
/// Longest `resource`.
const MAX_RESOURCE: usize = 512;
/// Most events per subscription, and longest event name.
const MAX_EVENTS: usize = 64;
const MAX_EVENT_NAME: usize = 100;

/// What a provider answered to a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub provider_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Google: the channel's `resourceId`, needed to stop it.
    pub channel_resource_id: Option<String>,
    /// Linear: the signing secret it issued (asked with `HookSpec::provider_issues_secret`).
    pub issued_secret: Option<linear::IssuedSecret>,
}

/// The webhook to create: where it delivers, what, and the secret it signs with.
pub struct HookSpec<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a SecretString,
    /// Linear: let the provider issue the secret (the integration's first webhook) rather
    /// than send ours (its later ones, which reuse the secret it issued).
    pub provider_issues_secret: bool,
}

/// What a subscription watches, per provider: the one dispatch over the API clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
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
pub enum Checked {
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
    fn presence(exists: bool) -> Self {
        if exists {
            Self::Present
        } else {
            Self::Missing
        }
    }

    /// A provider's 404 means the webhook is gone: to be created again.
    fn gone_is_missing(answer: Result<Self, ApiError>) -> Result<Self, ApiError> {
        match answer {
            Err(ApiError::NotFound) => Ok(Self::Missing),
            other => other,
        }
    }
}

impl Target {
    /// Parses `resource` in `provider`'s syntax; a provider without an API client here (or
    /// whose webhooks are set up by hand) is a 400 saying so.
    fn parse(
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

    fn required_scope(&self) -> Option<&'static str> {
        match self {
            Self::Github(target) => Some(target.required_scope()),
            Self::Gitlab(_) => Some(gitlab::REQUIRED_SCOPE),
            Self::Bitbucket(_) => Some(bitbucket::REQUIRED_SCOPE),
            Self::Jira(_) => Some(jira::REQUIRED_SCOPE),
            Self::Asana(_) | Self::Google(_) | Self::Linear(_) | Self::Microsoft(_) => None,
        }
    }

    fn default_events(&self) -> Vec<String> {
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
    fn validate_events(&self, events: &[String]) -> ServiceResult<()> {
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

    fn client<'a>(
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

    async fn create(&self, api: &ApiClient<'_>, hook: &HookSpec<'_>) -> Result<Created, ApiError> {
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

    async fn delete(
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
    async fn remove_strays(
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
    pub fn reconciled_before_renewal(&self) -> bool {
        matches!(self, Self::Jira(_))
    }

    /// Whether the provider signs (or authenticates) deliveries with the integration's own
    /// secret, which a rotation replaces at the provider: GitHub, GitLab, Bitbucket (the
    /// hook's secret or token), Graph (`clientState`), Google (the channel token). Not Linear
    /// (it issues its own), Asana (its handshake's), Jira (the app's JWT).
    pub fn signs_with_our_secret(&self) -> bool {
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
    async fn rekey(
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
    async fn check(
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

/// Slack, Discord (app-level deliveries), Notion (subscriptions made in its UI) and a GitHub
/// App (one webhook in the App's settings, the installation recorded as the account).
fn manual_only(provider: &Provider, record: Option<&integration::Model>) -> bool {
    crate::webhooks::schemes::of_provider(provider).is_some_and(|s| s.set_up_by_hand)
        || (provider.name == "github" && record.is_some_and(|r| r.account_id.is_some()))
}

fn set_up_by_hand(provider: &Provider) -> ServiceError {
    ServiceError::invalid("Webhooks of this provider are set up by hand").with_details(format!(
        "{} does not let the service create its webhooks through an API; GET /api/integrations/{{id}}/webhook gives the URL, the secret and the steps",
        provider.display_name
    ))
}

/// A short digest of a webhook secret (the first 16 hex digits of its SHA-256): enough to tell
/// that the secret changed, nothing to sign with. The secrets are random and long, so the
/// digest says nothing about them.
pub fn secret_digest(secret: &SecretString) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(secrecy::ExposeSecret::expose_secret(secret).as_bytes());
    hex::encode(&digest[..8])
}

/// A subscription's events, parsed from its column.
pub fn events_of(model: &Model) -> Vec<String> {
    serde_json::from_str(&model.events).unwrap_or_default()
}

pub fn subscription_not_found() -> ServiceError {
    ServiceError::not_found("Subscription not found")
}

/// The subscriptions of an integration, DELETED ones included.
pub async fn list(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<Vec<Model>> {
    let record = integrations::get_record(ctx, access, id).await?;
    Ok(store::subscriptions::list(&ctx.db, access.organization_id, record.id).await?)
}

/// Creates the webhook at the provider, or answers the live subscription to `resource`.
pub async fn create(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    resource: &str,
    events: Vec<String>,
) -> ServiceResult<Model> {
    let view = integrations::get(ctx, access, id).await?;
    if manual_only(&view.provider, view.record.as_ref()) {
        return Err(set_up_by_hand(&view.provider));
    }
    let record = view.record.ok_or_else(not_connected)?;
    if !record.connected {
        return Err(not_connected());
    }
    let resource = resource.trim();
    validate_resource(resource)?;
    let target = Target::parse(&view.provider, &record, resource)?;
    let events = if events.is_empty() {
        target.default_events()
    } else {
        validate_events(events)?
    };
    target.validate_events(&events)?;
    if let Some(scope) = target.required_scope() {
        require_scope(&view.provider, &record, scope)?;
    }
    if let Some(existing) = store::subscriptions::find_live(&ctx.db, record.id, resource).await? {
        let now = Utc::now();
        let abandoned = existing.state == SubscriptionState::Pending
            && existing.lease_expires_at.is_none_or(|at| at <= now);
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        if abandoned
            && store::subscriptions::try_take_lease(&ctx.db, existing.id, &ctx.instance, now, until)
                .await?
        {
            // A create that crashed before it stored the provider's answer: taken over, and
            // what it may have left at the provider removed first.
            tracing::warn!(subscription = %existing.id, "taking over an abandoned create");
            let events = events_of(&existing);
            return finish_create(
                ctx,
                &view.provider,
                &record,
                &target,
                &events,
                existing.id,
                true,
            )
            .await;
        }
        return Ok(existing);
    }
    if matches!(target, Target::Asana(_))
        && !store::subscriptions::live_of_integration(&ctx.db, record.id)
            .await?
            .is_empty()
    {
        return Err(ServiceError::conflict("One Asana subscription per integration")
            .with_details("each Asana webhook signs with the secret of its own handshake and an integration verifies with one: delete the existing subscription first"));
    }
    let until = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
    let new = NewSubscription {
        integration_id: record.id,
        organization_id: record.organization_id,
        provider: &record.provider,
        resource,
        events_json: serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()),
    };
    let Some(pending) =
        store::subscriptions::insert_pending(&ctx.db, new, &ctx.instance, until).await?
    else {
        // Another create won the race: its row is the answer.
        return store::subscriptions::find_live(&ctx.db, record.id, resource)
            .await?
            .ok_or_else(|| {
                ServiceError::conflict("Subscription changed").with_details("try again")
            });
    };
    finish_create(
        ctx,
        &view.provider,
        &record,
        &target,
        &events,
        pending.id,
        false,
    )
    .await
}

/// The provider side of a create, by the holder of the PENDING row's lease: ACTIVE with the
/// provider's answer, or the row removed when the provider refused. `takeover`: a crashed
/// create's row, whose leftovers at the provider are removed first.
async fn finish_create(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
    events: &[String],
    pending_id: Uuid,
    takeover: bool,
) -> ServiceResult<Model> {
    if takeover {
        remove_strays(ctx, provider, record, target).await?;
    }
    match create_at_provider(ctx, provider, record, target, events).await {
        Ok((created, secret_digest)) => {
            let next = next_check(ctx, created.expires_at, target.reconciled_before_renewal());
            let saved = store::subscriptions::mark_active(
                &ctx.db,
                pending_id,
                &ctx.instance,
                ProviderState {
                    provider_subscription_id: &created.provider_id,
                    expires_at: created.expires_at,
                    next_attempt_at: next,
                    renewed: false,
                    channel_resource_id: created.channel_resource_id.as_deref(),
                    previous_channel: None,
                    secret_digest: &secret_digest,
                },
            )
            .await?;
            if !saved {
                tracing::warn!(subscription = %pending_id, "subscription changed while it was created at the provider");
            }
            tracing::info!(subscription = %pending_id, provider = %record.provider, "webhook subscription created");
            store::subscriptions::find_any(&ctx.db, pending_id)
                .await?
                .ok_or_else(subscription_not_found)
        }
        Err(e) => {
            // Nothing exists at the provider: the row goes, so creating again tries again.
            store::subscriptions::remove_pending(&ctx.db, pending_id, &ctx.instance).await?;
            Err(e)
        }
    }
}

/// Removes the target's webhooks to the integration's URL (none of them is ours yet).
async fn remove_strays(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
) -> ServiceResult<()> {
    let url = webhook_url(ctx, provider, record)?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    let removed = target
        .remove_strays(&api, &url, None)
        .await
        .map_err(|e| provider_failed(provider, "removing webhooks we no longer own", e))?;
    if removed > 0 {
        tracing::warn!(integration = %record.id, removed, "webhooks we no longer own removed at the provider");
    }
    Ok(())
}

/// Deletes the webhook at the provider (404 counts as done) and marks it DELETED.
/// Deleting a DELETED subscription answers it as it is.
pub async fn delete(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    subscription_id: &str,
) -> ServiceResult<Model> {
    let subscription_id =
        Uuid::parse_str(subscription_id.trim()).map_err(|_| subscription_not_found())?;
    let record = integrations::get_record(ctx, access, id).await?;
    let subscription =
        store::subscriptions::find(&ctx.db, access.organization_id, record.id, subscription_id)
            .await?
            .ok_or_else(subscription_not_found)?;
    if subscription.state == SubscriptionState::Deleted {
        return Ok(subscription);
    }
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, subscription.id, &ctx.instance, now, until)
        .await?
    {
        return Err(ServiceError::conflict("Subscription busy")
            .with_details("it is being created, renewed or deleted right now; try again shortly"));
    }
    if let Err(e) = delete_at_provider(ctx, &record, &subscription).await {
        store::subscriptions::release_lease(&ctx.db, subscription.id, &ctx.instance).await?;
        return Err(e);
    }
    store::subscriptions::mark_deleted(&ctx.db, subscription.id, &ctx.instance).await?;
    tracing::info!(subscription = %subscription.id, provider = %record.provider, "webhook subscription deleted");
    store::subscriptions::find_any(&ctx.db, subscription.id)
        .await?
        .ok_or_else(subscription_not_found)
}

/// Disconnect's cleanup, before the tokens are erased: every live subscription is deleted at
/// the provider and marked DELETED. Never fails the disconnect: a subscription the provider
/// would not delete (or that is busy) is logged and left FAILED with the reason.
pub async fn delete_all_before_disconnect(ctx: &AppContext, record: &integration::Model) {
    let live = match store::subscriptions::live_of_integration(&ctx.db, record.id).await {
        Ok(live) => live,
        Err(e) => {
            tracing::error!(integration = %record.id, error = %e, "subscriptions not read before the disconnect");
            return;
        }
    };
    for subscription in live {
        if let Err(e) = delete_one_before_disconnect(ctx, record, &subscription).await {
            tracing::warn!(integration = %record.id, subscription = %subscription.id, error = %e.report(), "webhook subscription left at the provider by the disconnect");
        }
    }
}

async fn delete_one_before_disconnect(
    ctx: &AppContext,
    record: &integration::Model,
    subscription: &Model,
) -> ServiceResult<()> {
    let now = Utc::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    if !store::subscriptions::try_take_lease(&ctx.db, subscription.id, &ctx.instance, now, until)
        .await?
    {
        return Err(ServiceError::conflict("Subscription busy"));
    }
    match delete_at_provider(ctx, record, subscription).await {
        Ok(()) => {
            store::subscriptions::mark_deleted(&ctx.db, subscription.id, &ctx.instance).await?;
            Ok(())
        }
        Err(e) => {
            // Not forgotten: the renewer deletes it once the integration is connected again
            // (its new token can), `renewer::remove_leftovers`.
            let why = format!(
                "left at the provider by the disconnect: {}",
                problem_text(&e)
            );
            store::subscriptions::mark_left_over(
                &ctx.db,
                subscription.id,
                &ctx.instance,
                &why,
                1,
                now,
            )
            .await?;
            Err(e)
        }
    }
}

/// How long after the old channel was stopped its messages still count as the overlap's
/// (in flight when it was stopped).
pub const CHANNEL_OVERLAP_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// The provider call of a create: the integration's valid token, the webhook URL route 11
/// hands out, the integration's webhook secret. Answers the provider's answer and the digest
/// of the secret the webhook was set up with.
async fn create_at_provider(
    ctx: &AppContext,
    provider: &Provider,
    record: &integration::Model,
    target: &Target,
    events: &[String],
) -> ServiceResult<(Created, String)> {
    let url = webhook_url(ctx, provider, record)?;
    let secret = webhook_secret(ctx, record)?;
    let digest = secret_digest(&secret);
    let provider_issues_secret = matches!(target, Target::Linear(_))
        && !store::subscriptions::has_active(&ctx.db, record.id).await?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    if matches!(target, Target::Asana(_)) {
        // Asana's handshake arrives before its answer: the window is opened for it here,
        // and the handshake closes it.
        store::integrations::arm_handshake(
            &ctx.db,
            record.id,
            Utc::now() + asana::HANDSHAKE_WINDOW,
        )
        .await?;
    }
    let created = target
        .create(
            &api,
            &HookSpec {
                url: &url,
                events,
                secret: &secret,
                provider_issues_secret,
            },
        )
        .await
        .map_err(|e| provider_failed(provider, "creating the webhook", e))?;
    if let Some(issued) = &created.issued_secret {
        // The provider signs with the secret it issued: it becomes the integration's.
        let sealed = ctx.keyring.seal(
            SecretColumn::WebhookSecret,
            record.id,
            secrecy::ExposeSecret::expose_secret(&issued.0),
        );
        store::integrations::set_webhook_secrets(&ctx.db, record.id, sealed, None).await?;
        tracing::info!(integration = %record.id, "provider-issued webhook secret stored");
    }
    Ok((created, digest))
}

/// The provider call of a delete; a webhook already gone counts as done.
async fn delete_at_provider(
    ctx: &AppContext,
    record: &integration::Model,
    subscription: &Model,
) -> ServiceResult<()> {
    let Some(provider_id) = subscription.provider_subscription_id.as_deref() else {
        return Ok(());
    };
    let provider = ctx.catalog.get(&record.provider).ok_or_else(|| {
        ServiceError::internal(format!("provider {} not in catalog", record.provider))
    })?;
    let target = Target::parse(provider, record, &subscription.resource)?;
    let token = tokens::valid_token(ctx, record.clone()).await?;
    let api = target.client(ctx, &provider.name, token.access_token);
    match target
        .delete(
            &api,
            provider_id,
            subscription.channel_resource_id.as_deref(),
        )
        .await
    {
        Ok(()) | Err(ApiError::NotFound) => Ok(()),
        Err(e) => Err(provider_failed(provider, "deleting the webhook", e)),
    }
}

/// When the renewer looks at a subscription next: once 75 % of its lifetime has passed, or,
/// for one that never expires, after the reconciliation interval.
fn next_check(
    ctx: &AppContext,
    expires_at: Option<DateTime<Utc>>,
    reconciled_before_renewal: bool,
) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    let reconciliation = now
        + chrono::Duration::from_std(ctx.config.subscriptions.reconcile_interval)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
    Some(match expires_at {
        Some(expires_at) if reconciled_before_renewal => {
            reconciliation.min(now + (expires_at - now) * 3 / 4)
        }
        Some(expires_at) => now + (expires_at - now) * 3 / 4,
        None => reconciliation,
    })
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

fn not_connected() -> ServiceError {
    ServiceError::failed_precondition("Integration not connected")
        .with_details("authorize the integration first")
}

/// A 400 naming the scope the grant lacks.
fn require_scope(
    provider: &Provider,
    record: &integration::Model,
    scope: &str,
) -> ServiceResult<()> {
    let granted = record
        .permissions
        .as_deref()
        .and_then(text_list::decode)
        .unwrap_or_default();
    if granted.iter().any(|s| s == scope) {
        return Ok(());
    }
    Err(
        ServiceError::invalid("Missing OAuth scope").with_details(format!(
            "the {} grant lacks the {scope} scope; authorize the integration again to grant it",
            provider.display_name
        )),
    )
}

fn validate_resource(resource: &str) -> ServiceResult<()> {
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

fn validate_events(events: Vec<String>) -> ServiceResult<Vec<String>> {
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

/// A provider's refusal as the client sees it: 502 with what was attempted and the
/// provider's status and short message (never a token or a secret).
fn provider_failed(provider: &Provider, attempted: &str, err: ApiError) -> ServiceError {
    ServiceError::provider("Provider failed")
        .with_details(format!("{attempted} at {}: {err}", provider.display_name))
}

/// The client-facing text of an error, for `last_error`.
fn problem_text(err: &ServiceError) -> String {
    match err {
        ServiceError::InvalidArgument(p)
        | ServiceError::Unauthenticated(p)
        | ServiceError::PermissionDenied(p)
        | ServiceError::NotFound(p)
        | ServiceError::FailedPrecondition(p)
        | ServiceError::Conflict(p)
        | ServiceError::Provider(p)
        | ServiceError::QuotaExceeded { problem: p, .. } => match &p.details {
            Some(details) => format!("{}: {details}", p.message),
            None => p.message.clone(),
        },
        other => other.to_string(),
    }
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
