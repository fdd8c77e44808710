//! What every RPC needs, built once at start: configuration, database, catalog, verifier,
//! metrics.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    auth::SessionVerifier,
    catalog::{Catalog, CatalogError},
    config::Config,
    crypto::Keyring,
    metrics::Metrics,
    store::{self, organizations::KnownOrganizations},
};

#[derive(Clone)]
pub struct AppContext {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub catalog: Arc<Catalog>,
    pub sessions: SessionVerifier,
    pub keyring: Arc<Keyring>,
    /// This process's name as a lease owner (token refreshes).
    pub instance: Arc<str>,
    /// Provider token refreshes this process may run at once (`MAX_CONCURRENT_REFRESHES`).
    pub refresh_slots: Arc<tokio::sync::Semaphore>,
    /// This process's Prometheus recorder (disabled with `METRICS_ADDR=off`).
    pub metrics: Metrics,
    /// Organizations seen to exist lately (service_role calls name theirs on every call).
    pub organizations: KnownOrganizations,
    /// Wakes this process's subscription renewer when a subscription became due now (Graph's
    /// lifecycle notifications, recorded by the webhook scheme, acted on by the renewer).
    pub subscriptions_due: Arc<tokio::sync::Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot open the database: {0}")]
    Database(sea_orm::DbErr),
    #[error("cannot apply migrations: {0}")]
    Migrations(#[from] crate::migrate::MigrateError),
}

impl AppContext {
    /// Loads the catalog, connects to the database and applies pending migrations.
    pub async fn start(config: Config) -> Result<Self, StartupError> {
        config.warn_if_oauth_states_unbound();
        let catalog = Catalog::load(config.providers_file.as_deref())?;
        let db = store::connect(&config.database_url)
            .await
            .map_err(StartupError::Database)?;
        let keyring = Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
        crate::migrate::migrate(&db, &keyring).await?;
        Ok(Self {
            instance: format!("service-{}", uuid::Uuid::new_v4().simple()).into(),
            metrics: Metrics::new(config.metrics_addr.is_some()),
            refresh_slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_refreshes)),
            sessions: SessionVerifier::new(config.jwt_secret.expose())
                .with_issuer(config.session_issuer()),
            keyring: Arc::new(keyring),
            config: Arc::new(config),
            db,
            catalog: Arc::new(catalog),
            organizations: KnownOrganizations::default(),
            subscriptions_due: Arc::new(tokio::sync::Notify::new()),
        })
    }
}
