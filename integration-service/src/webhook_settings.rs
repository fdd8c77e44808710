//! `GET /api/integrations/{id}/webhook` (+ `/rotate`, `PUT`): the webhook URL and secret a person pastes into the provider's settings, and
//! rotation of that secret with a grace period for deliveries already in flight.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::{
    access::Access,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    store::{self, entities::integration},
    webhook_guide::{guide, WebhookGuide},
    webhooks::{
        schemes::{self, Scheme, SecretSource},
        secrets::{new_webhook_secret, WebhookSecrets},
    },
};

/// How long a rotated-out secret keeps verifying by default.
const DEFAULT_GRACE_SECS: i64 = 24 * 3600;
/// Longest grace period a caller may ask for.
const MAX_GRACE_SECS: i64 = 7 * 24 * 3600;

/// The webhook URL, the current secret, and until when each rotated-out secret verifies.
/// `Debug` never shows the secret.
#[derive(Clone, Debug)]
pub(crate) struct WebhookSettings {
    pub url: String,
    pub secret: SecretString,
    /// End of grace of every rotated-out secret still verifying, soonest first.
    pub previous_secrets_valid_until: Vec<DateTime<Utc>>,
    /// What to paste where at the provider.
    pub guide: WebhookGuide,
}

impl WebhookSettings {
    /// The latest end of grace (what `previous_secret_expires_at` has always meant).
    pub(crate) fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.previous_secrets_valid_until.iter().max().copied()
    }
}

/// The integration's record, webhook URL and scheme, or why it has no webhook settings.
async fn webhook_target(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<(integration::Model, String, &'static Scheme)> {
    let view = integrations::get(ctx, access, id).await?;
    let scheme = schemes::of_provider(&view.provider);
    if scheme.is_some_and(|s| !s.per_integration()) {
        return Err(
            ServiceError::failed_precondition("No per-integration webhook secret").with_details(
                format!(
                    "{} deliveries are verified with the app's signing secret ({})",
                    view.provider.display_name,
                    view.provider.var("SIGNING_SECRET")
                ),
            ),
        );
    }
    let path = match &view.record {
        Some(record) => schemes::webhook_path(&view.provider, &record.id),
        None => None,
    };
    let (Some(record), Some(path), Some(scheme)) = (view.record, path, scheme) else {
        return Err(
            ServiceError::failed_precondition("Webhooks unavailable").with_details(format!(
                "{} has no webhook settings until it is connected (or sends no webhooks)",
                view.provider.display_name
            )),
        );
    };
    check_has_secret(&record)?;
    let base = ctx.config.public_api_url.as_str().trim_end_matches('/');
    Ok((record, format!("{base}{path}"), scheme))
}

fn check_has_secret(record: &integration::Model) -> ServiceResult<()> {
    if !record.connected || record.webhook_secret.is_none() {
        return Err(
            ServiceError::failed_precondition("Integration not connected")
                .with_details("the webhook secret is created when authorization completes"),
        );
    }
    Ok(())
}

fn open_secrets(ctx: &AppContext, record: &integration::Model) -> ServiceResult<WebhookSecrets> {
    WebhookSecrets::open(&ctx.keyring, record, Utc::now()).map_err(|e| {
        ServiceError::internal_caused(format!("integration {} webhook secrets", record.id), e)
    })
}

fn settings(
    ctx: &AppContext,
    record: &integration::Model,
    url: String,
    secrets: WebhookSecrets,
) -> ServiceResult<WebhookSettings> {
    let secret = secrets
        .current
        .ok_or_else(|| ServiceError::failed_precondition("Integration not connected"))?;
    Ok(WebhookSettings {
        guide: provider_guide(ctx, &record.provider, &url),
        url,
        secret,
        previous_secrets_valid_until: secrets.grace.iter().map(|g| g.valid_until).collect(),
    })
}

fn provider_guide(ctx: &AppContext, provider: &str, url: &str) -> WebhookGuide {
    match ctx.catalog.get(provider) {
        Some(provider) => guide(provider, url),
        None => WebhookGuide::none(),
    }
}

/// Route 11. An app-level secret kept in the configuration (Slack's signing secret) is never
/// shown: the answer has the URL and the guide, and an empty secret.
pub(crate) async fn get(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<WebhookSettings> {
    let view = integrations::get(ctx, access, id).await?;
    let app_level = schemes::of_provider(&view.provider).is_some_and(|s| !s.per_integration());
    if app_level {
        let base = ctx.config.public_api_url.as_str().trim_end_matches('/');
        let url = format!("{base}/api/integrations/{}/webhook", view.provider.name);
        return Ok(WebhookSettings {
            guide: guide(&view.provider, &url),
            url,
            secret: SecretString::from(String::new()),
            previous_secrets_valid_until: Vec::new(),
        });
    }
    let (record, url, _) = webhook_target(ctx, access, id).await?;
    let secrets = open_secrets(ctx, &record)?;
    settings(ctx, &record, url, secrets)
}

/// Longest provider-issued secret accepted.
const MAX_PROVIDER_SECRET: usize = 512;

/// `PUT /api/integrations/{id}/webhook`: stores a secret the provider issued (Linear's signing
/// secret, a Standard Webhooks `whsec_`), encrypted like the generated ones. It replaces the
/// current secret at once (the provider signs with the new one only) and is never answered
/// back here: `GET /api/integrations/{id}/webhook` reveals it to an Owner/Admin.
///
/// Discord also names the application the public key belongs to (`application_id`): a
/// delivery to this integration's URL must name the same application. Deliveries are verified
/// with this integration's key at its own URL, so an application id claims nothing from
/// another organization (two may name the same application; neither receives the other's).
pub(crate) async fn set(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    secret: &str,
    application_id: Option<&str>,
) -> ServiceResult<WebhookSettings> {
    let (record, url, scheme) = webhook_target(ctx, access, id).await?;
    if scheme.secret != SecretSource::ProviderIssued {
        let why = match scheme.secret == SecretSource::Handshake {
            true => "this provider sends its secret in a handshake: open the window with POST .../webhook/handshake, then create the webhook at the provider",
            false => "this provider's webhook secret is generated by us: read it with GET and rotate it",
        };
        return Err(ServiceError::failed_precondition("Secret generated here").with_details(why));
    }
    validate_provider_secret(scheme, secret)?;
    let sealed = ctx
        .keyring
        .seal(SecretColumn::WebhookSecret, record.id, secret);
    let account = match (scheme.checks.application_id, application_id) {
        (Some(valid), application) => Some(
            application
                .map(str::trim)
                .filter(|a| valid(a))
                .ok_or_else(|| {
                    ServiceError::invalid("Invalid application id").with_details("applicationId: the Discord application's id (digits), shown beside its public key")
                })?,
        ),
        (_, Some(_)) => {
            return Err(ServiceError::invalid("Unexpected application id")
                .with_details("applicationId is only for Discord"))
        }
        (_, None) => None,
    };
    // Conditional on the integration still being connected: a disconnect racing this keeps
    // its erased secret, and a later reconnect starts from a new one.
    if !store::integrations::set_provider_issued_secret(&ctx.db, record.id, account, sealed).await?
    {
        return Err(
            ServiceError::failed_precondition("Integration not connected")
                .with_details("the integration was disconnected; connect it again first"),
        );
    }
    tracing::info!(integration = %record.id, "provider-issued webhook secret stored");
    Ok(WebhookSettings {
        guide: provider_guide(ctx, &record.provider, &url),
        url,
        secret: SecretString::from(String::new()),
        previous_secrets_valid_until: Vec::new(),
    })
}

fn validate_provider_secret(scheme: &Scheme, secret: &str) -> ServiceResult<()> {
    let invalid = |why: &str| ServiceError::invalid("Invalid webhook secret").with_details(why);
    if secret.is_empty()
        || secret.len() > MAX_PROVIDER_SECRET
        || !secret.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(invalid("secret: 1 to 512 printable ASCII characters"));
    }
    match scheme.checks.secret {
        Some(check) => check(secret).map_err(invalid),
        None => Ok(()),
    }
}

/// Default handshake window.
const DEFAULT_HANDSHAKE_SECS: i64 = 600;
/// Longest handshake window a caller may open.
const MAX_HANDSHAKE_SECS: i64 = 3600;

/// An open handshake window: the URL to register at the provider, and until when.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeWindow {
    pub url: String,
    pub armed_until: DateTime<Utc>,
}

/// `POST /api/integrations/{id}/webhook/handshake`: opens the window in which the provider's
/// handshake secret (Asana, Notion) is accepted (`window_secs`, 0 for the default 10 minutes).
pub(crate) async fn arm_handshake(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    window_secs: i64,
) -> ServiceResult<HandshakeWindow> {
    let window = match window_secs {
        0 => DEFAULT_HANDSHAKE_SECS,
        s if (1..=MAX_HANDSHAKE_SECS).contains(&s) => s,
        _ => {
            return Err(ServiceError::invalid("Invalid handshake window")
                .with_details(format!("windowSeconds: between 1 and {MAX_HANDSHAKE_SECS}")))
        }
    };
    let (record, url, scheme) = webhook_target(ctx, access, id).await?;
    if scheme.secret != SecretSource::Handshake {
        return Err(ServiceError::failed_precondition("No webhook handshake")
            .with_details("this provider's webhook secret does not come in a handshake"));
    }
    let armed_until = Utc::now() + chrono::Duration::seconds(window);
    if !store::integrations::arm_handshake(&ctx.db, record.id, armed_until).await? {
        return Err(ServiceError::failed_precondition(
            "Integration not connected",
        ));
    }
    tracing::info!(integration = %record.id, window_secs = window, "webhook handshake armed");
    Ok(HandshakeWindow { url, armed_until })
}

/// A new secret; the current one keeps verifying for `grace_secs` (0 means the default,
/// 24 h), and every secret rotated out earlier keeps its own grace.
///
/// Runs under the row's write lock: two rotations at once (a double click, two tabs) apply
/// one after the other, each keeping what the other rotated out, and a concurrent
/// disconnect or key rotation is never undone.
pub(crate) async fn rotate(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
    grace_secs: i64,
) -> ServiceResult<WebhookSettings> {
    let grace = match grace_secs {
        0 => DEFAULT_GRACE_SECS,
        s if (1..=MAX_GRACE_SECS).contains(&s) => s,
        _ => {
            return Err(
                ServiceError::invalid("Invalid grace period").with_details(format!(
                    "gracePeriodSeconds: between 1 and {MAX_GRACE_SECS}"
                )),
            )
        }
    };
    let (record, url, scheme) = webhook_target(ctx, access, id).await?;
    if scheme.secret == SecretSource::ProviderIssued {
        return Err(
            ServiceError::failed_precondition("Secret issued by the provider")
                .with_details("set the provider's new secret with PUT instead of rotating"),
        );
    }
    let (txn, current) = store::integrations::begin_with_row_lock(&ctx.db, record.id).await?;
    let current = current
        .filter(|row| row.organization_id == record.organization_id)
        .ok_or_else(crate::error::integration_not_found)?;
    check_has_secret(&current)?;
    let now = Utc::now();
    let secrets = open_secrets(ctx, &current)?;
    let grace_list = secrets.rotated_grace(now + chrono::Duration::seconds(grace), now);
    let secret = new_webhook_secret();
    store::integrations::set_webhook_secrets(
        &txn,
        current.id,
        ctx.keyring.seal(
            SecretColumn::WebhookSecret,
            current.id,
            secrecy::ExposeSecret::expose_secret(&secret),
        ),
        crate::crypto::grace::seal_grace(&ctx.keyring, current.id, &grace_list),
    )
    .await?;
    // The webhooks the service set up at the provider sign with the old secret: due now, so
    // the renewer sets them up again with the new one well inside the grace period (in the
    // same transaction: a crash cannot rotate the secret and forget the webhooks).
    let due = store::subscriptions::make_all_due(&txn, current.id, now).await?;
    txn.commit().await?;
    if due > 0 {
        ctx.subscriptions_due.notify_one();
    }
    tracing::info!(integration = %current.id, grace_secrets = grace_list.len(), subscriptions = due, "webhook secret rotated");
    settings(
        ctx,
        &current,
        url,
        WebhookSecrets {
            current: Some(secret),
            grace: grace_list,
            cached: false,
        },
    )
}
