//! `seed-demo`: seeds a connected GitHub integration for the client checks
//! (`.ci/python-client.sh`) and prints, one `NAME=value` per line, what a client needs: the
//! integration id, its webhook secret, a service_role token and an owner's session token.
//!
//! Reads `DATABASE_URL`, `INTEGRATION_ENCRYPTION_KEY` and `SUPABASE_JWT_SECRET` like the
//! service (migrations are applied), plus `SEED_ORG` (default 1) and `SEED_ACCESS_TOKEN`.
//! Development and CI only: it writes an access token chosen on the command line.

use anyhow::Context;
use integration_service::{
    auth::{sign_session, Claims},
    config::Config,
    crypto::Keyring,
    store,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let org: i64 = std::env::var("SEED_ORG")
        .unwrap_or_else(|_| "1".into())
        .parse()
        .context("SEED_ORG: an organization id")?;
    let access_token =
        std::env::var("SEED_ACCESS_TOKEN").context("SEED_ACCESS_TOKEN: the token to store")?;
    let db = store::connect(&config.database_url).await?;
    store::migrate(&db).await?;
    let keyring = Keyring::new(&config.encryption_key, &config.previous_encryption_keys);
    let seeded =
        test_support::seed::connected_integration(&db, &keyring, org, "github", &access_token)
            .await?;
    let now = chrono::Utc::now().timestamp();
    let sign = |sub: Option<String>, role: &str| {
        sign_session(
            config.jwt_secret.expose(),
            &Claims {
                sub,
                exp: now + 3600,
                iat: Some(now),
                role: Some(role.into()),
                aud: Some("authenticated".into()),
                iss: config.session_issuer(),
                ..Default::default()
            },
        )
    };
    println!("INTEGRATION_ID={}", seeded.integration_id);
    println!("WEBHOOK_SECRET={}", seeded.webhook_secret);
    println!("SERVICE_ROLE_JWT={}", sign(None, "service_role")?);
    println!(
        "OWNER_JWT={}",
        sign(Some(seeded.owner.to_string()), "authenticated")?
    );
    Ok(())
}
