//! Connecting a provider: starting authorization and completing its callback.
//!
//! Invariants:
//! - a state is accepted once, at its own provider's callback, within 10 minutes, from the
//!   browser that started it (its cookie), or in frontend callback mode posted with the
//!   session of the user who started it (unless `OAUTH_STATE_COOKIE=off`, logged loudly);
//!   anything else is `error=invalid_state` and no token request is made;
//! - the user who started the flow is still an Owner/Admin when it completes
//!   (`error=forbidden` otherwise, before the code is exchanged);
//! - every redirect goes to `APP_URL`, with only catalog names and fixed words in its query;
//! - tokens and the webhook secret are stored encrypted, bound to their row and column.

mod connection;
pub mod state;

use chrono::Utc;
use uuid::Uuid;

use crate::{
    access::{Access, Role},
    auth::parse_cookie_header,
    catalog::Provider,
    context::AppContext,
    crypto::SecretColumn,
    error::{ServiceError, ServiceResult},
    integrations::{self, IntegrationRef},
    providers::{
        sanitize_provider_text,
        token_client::{self},
        ProviderClient,
    },
    store::{self},
};
use connection::{already_connected, claimed_elsewhere, exchange, github_installation, save_grant};
use state::{StateClaims, StateError};

/// The frontend page callbacks return to.
const RETURN_PATH: &str = "/organization/integrations";

/// The answer to an authorize request.
pub struct Started {
    pub redirect_url: String,
    /// `Set-Cookie` value binding the state to this browser, when binding is on.
    pub set_cookie: Option<String>,
}

/// A provider's callback as the gateway received it.
#[derive(Default)]
pub struct Callback {
    pub provider: String,
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// GitHub App: the installation the user just installed and authorized (verified against
    /// the user's installations before it is recorded).
    pub installation_id: Option<String>,
    /// The request's `Cookie` headers.
    pub cookie_headers: Vec<String>,
    /// The user whose verified session posted the callback (frontend callback mode); `None`
    /// for the provider's redirect to the gateway.
    pub completed_by: Option<Uuid>,
}

/// The state (in the URL) and its binding cookie are credentials: `Debug` hides them.
impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("redirect_url", &"[redacted]")
            .field(
                "set_cookie",
                &self.set_cookie.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// The code, the state and the cookies are credentials: `Debug` shows only whether they came.
impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map(|_| "[redacted]");
        f.debug_struct("Callback")
            .field("provider", &self.provider)
            .field("code", &shown(&self.code))
            .field("state", &shown(&self.state))
            .field("error", &self.error)
            .field("installation_id", &self.installation_id)
            .field("cookie_headers", &self.cookie_headers.len())
            .field("completed_by", &self.completed_by)
            .finish()
    }
}

/// How a callback ended; each becomes a redirect to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Connected {
        provider: String,
    },
    AccessDenied,
    InvalidState(StateError),
    CallbackFailed,
    /// The provider account is connected to another organization: nothing was changed.
    AlreadyConnected,
    /// The user who started the flow is no longer an Owner/Admin of the organization (or no
    /// longer a member): the code was not exchanged, nothing was changed.
    Forbidden,
}

impl Outcome {
    /// The redirect under `APP_URL`. Only catalog names (validated lower-case) and fixed
    /// words are placed in it: provider text never is.
    pub fn redirect_url(&self, app_url: &url::Url) -> String {
        let base = app_url.as_str().trim_end_matches('/');
        let query = match self {
            Self::Connected { provider } => format!("success={provider}_connected"),
            Self::AccessDenied => "error=access_denied".into(),
            Self::InvalidState(_) => "error=invalid_state".into(),
            Self::CallbackFailed => "error=callback_failed".into(),
            Self::AlreadyConnected => "error=already_connected".into(),
            Self::Forbidden => "error=forbidden".into(),
        };
        format!("{base}{RETURN_PATH}?{query}")
    }
}

/// Name of the cookie binding a state of `provider` to the browser.
fn state_cookie_name(provider: &str) -> String {
    format!("oauth_state_{provider}")
}

fn state_cookie(ctx: &AppContext, provider: &str, value: &str, max_age: i64) -> String {
    let secure = if ctx.config.public_api_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={value}; Path=/api; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        state_cookie_name(provider)
    )
}

/// Clears a provider's binding cookie once its callback has been handled.
pub fn clear_state_cookie(ctx: &AppContext, provider: &str) -> Option<String> {
    (ctx.config.oauth_state_cookie && ctx.catalog.get(provider).is_some())
        .then(|| state_cookie(ctx, provider, "", 0))
}

/// Where the provider returns the browser: the gateway's callback, or in frontend callback
/// mode `{OAUTH_FRONTEND_CALLBACK_URL}/{provider}`.
fn redirect_uri(ctx: &AppContext, provider: &Provider) -> String {
    match &ctx.config.oauth_frontend_callback_url {
        Some(frontend) => format!(
            "{}/{}",
            frontend.as_str().trim_end_matches('/'),
            provider.name
        ),
        None => format!(
            "{}{}",
            ctx.config.public_api_url.as_str().trim_end_matches('/'),
            provider.callback_path()
        ),
    }
}

/// `POST /api/integrations/{id}/authorize`: gets or creates the record, remembers a state, answers the authorize URL.
pub async fn start_authorization(
    ctx: &AppContext,
    access: &Access,
    id: &IntegrationRef,
) -> ServiceResult<Started> {
    let record = integrations::get_or_create(ctx, access, id).await?;
    let provider = ctx
        .catalog
        .get(&record.provider)
        .ok_or_else(crate::error::integration_not_found)?;
    let client = ProviderClient::configured(&ctx.config, provider)?;
    let redirect_uri = redirect_uri(ctx, provider);
    let (challenge, verifier) = match provider.pkce {
        true => {
            let (challenge, verifier) = token_client::new_pkce_pair();
            (Some(challenge), Some(verifier))
        }
        false => (None, None),
    };
    let nonce = state::random_token(16);
    let session_bound = ctx.config.oauth_frontend_callback_url.is_some();
    if session_bound && access.user_id.is_none() {
        return Err(ServiceError::failed_precondition("A user session is required").with_details("with OAUTH_FRONTEND_CALLBACK_URL set, only the user who starts an authorization can complete it"));
    }
    // In frontend callback mode the browser returns to another site: the session, not a
    // cookie of ours, binds the state.
    let cookie_value =
        (ctx.config.oauth_state_cookie && !session_bound).then(|| state::random_token(32));
    if cookie_value.is_none() && !session_bound {
        tracing::warn!(provider = %provider.name, "OAuth state NOT bound to the browser (OAUTH_STATE_COOKIE=off): any browser holding the link can finish this flow (login CSRF); set OAUTH_FRONTEND_CALLBACK_URL instead");
    }
    let now = Utc::now();
    let claims = StateClaims {
        provider: provider.name.clone(),
        organization_id: access.organization_id,
        user_id: access.user_id,
        integration_id: record.id,
        nonce: nonce.clone(),
        issued_at: now.timestamp(),
        binding: cookie_value.as_deref().map(state::binding_hash),
        session_bound,
    };
    let sealed = state::seal(&ctx.keyring, &claims);
    store::oauth_states::purge_expired(&ctx.db).await?;
    store::oauth_states::insert(
        &ctx.db,
        store::oauth_states::NewState {
            nonce: &nonce,
            provider: &provider.name,
            organization_id: access.organization_id,
            user_id: access.user_id,
            integration_id: record.id,
            pkce_verifier: verifier
                .as_deref()
                .map(|v| ctx.keyring.seal(SecretColumn::PkceVerifier, &nonce, v)),
            redirect_uri: &redirect_uri,
            expires_at: now + chrono::Duration::seconds(state::STATE_LIFETIME_SECS),
        },
    )
    .await?;
    let url =
        token_client::authorize_url(&client, &redirect_uri, sealed, challenge).map_err(|why| {
            ServiceError::internal(format!("authorize URL of {}: {why}", provider.name))
        })?;
    Ok(Started {
        redirect_url: url.to_string(),
        set_cookie: cookie_value
            .map(|value| state_cookie(ctx, &provider.name, &value, state::STATE_LIFETIME_SECS)),
    })
}

/// The providers' callbacks (`/api/auth/code/github`, `/api/integrations/{provider}/callback`): verifies and consumes the state, exchanges the code, stores the connection.
/// Database failures are errors; every other failure is an `Outcome`.
pub async fn complete_authorization(
    ctx: &AppContext,
    callback: Callback,
) -> ServiceResult<Outcome> {
    let Some(provider) = ctx.catalog.get(&callback.provider) else {
        // The browser's redirect always goes back to the app; the frontend's POST is an API
        // call and learns that the provider does not exist.
        if callback.completed_by.is_some() {
            return Err(ServiceError::not_found("Provider not found"));
        }
        return Ok(Outcome::InvalidState(StateError::WrongProvider));
    };
    let claims = match verified_claims(ctx, provider, &callback) {
        Ok(claims) => claims,
        Err(why) => {
            tracing::warn!(provider = %provider.name, %why, "OAuth callback refused");
            return Ok(Outcome::InvalidState(why));
        }
    };
    let Some(row) = store::oauth_states::take(&ctx.db, &claims.nonce).await? else {
        tracing::warn!(provider = %provider.name, "OAuth callback with a used or unknown state");
        return Ok(Outcome::InvalidState(StateError::Consumed));
    };
    if row.provider != provider.name || row.integration_id != claims.integration_id {
        return Ok(Outcome::InvalidState(StateError::Forged));
    }
    if !still_manager(ctx, &claims).await? {
        tracing::warn!(provider = %provider.name, integration = %row.integration_id, "callback refused: the user who started it is no longer an Owner/Admin");
        return Ok(Outcome::Forbidden);
    }
    if let Some(error) = &callback.error {
        let error = sanitize_provider_text(error);
        tracing::info!(provider = %provider.name, %error, "authorization not granted at the provider");
        return Ok(match error.as_str() {
            "access_denied" => Outcome::AccessDenied,
            _ => Outcome::CallbackFailed,
        });
    }
    let Some(code) = callback.code.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(Outcome::CallbackFailed);
    };
    let grant = match exchange(ctx, provider, &row, code).await {
        Ok(grant) => grant,
        Err(why) => {
            return authorization_failed(ctx, provider, &row, "code exchange failed", why).await
        }
    };
    let grant = match github_installation(ctx, provider, &callback, grant).await {
        Ok(grant) => grant,
        Err(why) => {
            return authorization_failed(
                ctx,
                provider,
                &row,
                "GitHub App installation not recorded",
                why,
            )
            .await
        }
    };
    if let Some(outcome) = claimed_elsewhere(ctx, provider, row.integration_id, &grant).await? {
        return Ok(outcome);
    }
    if let Err(e) = save_grant(ctx, provider, row.integration_id, grant).await {
        // A concurrent callback of another organization won the unique index in between.
        if e.is_unique_violation() {
            return Ok(already_connected(provider, row.integration_id));
        }
        return Err(e);
    }
    tracing::info!(provider = %provider.name, integration = %row.integration_id, "integration connected");
    Ok(Outcome::Connected {
        provider: provider.name.clone(),
    })
}

/// A callback that got past its state but failed at the provider: the reason is kept as the
/// integration's `last_error` and the browser is told
/// `callback_failed`.
async fn authorization_failed(
    ctx: &AppContext,
    provider: &Provider,
    row: &store::entities::oauth_state::Model,
    what: &str,
    why: String,
) -> ServiceResult<Outcome> {
    tracing::warn!(provider = %provider.name, integration = %row.integration_id, %why, "{what}");
    store::integrations::set_last_error(
        &ctx.db,
        row.integration_id,
        &format!("authorization failed: {why}"),
    )
    .await?;
    Ok(Outcome::CallbackFailed)
}

/// Whether the user who started the flow may still manage the organization's integrations:
/// a demotion or removal between the start and the callback (up to the state's 10 minutes)
/// ends the flow before the code is exchanged. A flow started by a `service_role` caller has
/// no user to re-check.
async fn still_manager(ctx: &AppContext, claims: &StateClaims) -> ServiceResult<bool> {
    let Some(user) = claims.user_id else {
        return Ok(true);
    };
    let memberships = store::organizations::memberships_of(&ctx.db, user).await?;
    Ok(memberships.iter().any(|(organization, role)| {
        *organization == claims.organization_id
            && matches!(Role::parse(role), Some(Role::Owner | Role::Admin))
    }))
}

fn verified_claims(
    ctx: &AppContext,
    provider: &Provider,
    callback: &Callback,
) -> Result<StateClaims, StateError> {
    let sealed = callback.state.as_deref().ok_or(StateError::Missing)?;
    let claims = state::open(&ctx.keyring, sealed)?;
    let cookie_name = state_cookie_name(&provider.name);
    let cookie = callback
        .cookie_headers
        .iter()
        .flat_map(|header| parse_cookie_header(header))
        .find(|(name, _)| *name == cookie_name)
        .map(|(_, value)| value);
    state::verify(
        &claims,
        &provider.name,
        Utc::now().timestamp(),
        cookie.as_deref(),
        callback.completed_by,
    )?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_credential_holders_is_redacted() {
        let callback = Callback {
            provider: "github".into(),
            code: Some("the-code-123".into()),
            state: Some("the-state-456".into()),
            error: None,
            installation_id: Some("12345678".into()),
            cookie_headers: vec!["sb-access-token=jwt-789".into()],
            completed_by: None,
        };
        let started = Started {
            redirect_url: "https://github.com/login/oauth/authorize?state=the-state-456".into(),
            set_cookie: Some("oauth_state_github=bind-000".into()),
        };
        let delivery = crate::webhooks::receive::Delivery {
            provider: "github".into(),
            integration_id: None,
            headers: [(
                "x-hub-signature-256".to_string(),
                b"sha256=sig-111".to_vec(),
            )]
            .into(),
            body: bytes::Bytes::from_static(b"{\"payload\":\"body-222\"}"),
            ..Default::default()
        };
        let shown = format!("{callback:?} {started:?} {delivery:?}");
        for secret in [
            "code-123",
            "state-456",
            "jwt-789",
            "bind-000",
            "sig-111",
            "body-222",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn redirects_stay_under_app_url() {
        let app = url::Url::parse("https://app.example.com").unwrap();
        assert_eq!(
            Outcome::Connected {
                provider: "github".into()
            }
            .redirect_url(&app),
            "https://app.example.com/organization/integrations?success=github_connected"
        );
        assert_eq!(
            Outcome::InvalidState(StateError::Expired).redirect_url(&app),
            "https://app.example.com/organization/integrations?error=invalid_state"
        );
        let nested = url::Url::parse("https://example.com/app").unwrap();
        assert_eq!(
            Outcome::AccessDenied.redirect_url(&nested),
            "https://example.com/app/organization/integrations?error=access_denied"
        );
    }
}
