//! The first schema's single previous-secret column, on SQLite and PostgreSQL: a database at
//! the migration before 19 with legacy values is brought up to date by `migrate::migrate` —
//! a secret inside its grace period joins the grace list and keeps verifying until its own
//! expiry, an ended or disconnected one is cleared, the columns are dropped; a live value that
//! does not open stops the migration with its row named and nothing dropped; migration 19 run
//! on its own refuses while a value is left.

use chrono::{Duration, Utc};
use integration_service::{
    config::EncryptionKey,
    crypto::{grace, Keyring, SecretColumn},
    migrate::{migrate, FoldReport, MigrateError},
    store::{self, entities::integration},
    webhooks::secrets::WebhookSecrets,
};
use migrations::{Migrator, MigratorTrait, DROP_LEGACY_PREVIOUS_SECRET};
use sea_orm::{
    sea_query::{Alias, Expr, ExprTrait, Query},
    ActiveModelTrait,
    ActiveValue::Set,
    ConnectionTrait, DatabaseConnection, EntityTrait,
};
use secrecy::ExposeSecret;
use test_support::test_keyring as keyring;
use test_support::{dual_db_test, Db, TestDatabase};
use uuid::Uuid;

dual_db_test!(
    legacy_previous_secrets_are_folded_then_their_columns_dropped,
    an_unopenable_legacy_secret_stops_the_migration_and_drops_nothing,
);

/// A database at the migration before 19, as a deployment of the previous release left it.
async fn previous_release(kind: Db) -> Option<(TestDatabase, DatabaseConnection)> {
    let database = TestDatabase::create(kind).await?;
    let db = store::connect(&database.url).await.unwrap();
    assert!(store::migrate_until(&db, DROP_LEGACY_PREVIOUS_SECRET)
        .await
        .unwrap());
    Some((database, db))
}

/// An integration of `org` with its current secret and a legacy previous secret sealed by
/// `sealer`, valid until `until`.
async fn with_legacy(
    db: &DatabaseConnection,
    org: i64,
    connected: bool,
    sealer: &Keyring,
    previous: &str,
    until: chrono::DateTime<Utc>,
) -> Uuid {
    store::organizations::ensure_membership(db, org, Uuid::new_v4(), "OWNER")
        .await
        .unwrap();
    let record = store::integrations::get_or_create(db, org, "github")
        .await
        .unwrap();
    let id = record.id;
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(connected);
    active.webhook_secret = Set(Some(
        keyring()
            .seal(SecretColumn::WebhookSecret, id, "current")
            .into_stored(),
    ));
    active.update(db).await.unwrap();
    let legacy = sealer
        .seal(SecretColumn::LegacyPreviousWebhookSecret, id, previous)
        .into_stored();
    let update = Query::update()
        .table(Alias::new("integrations"))
        .value(Alias::new("previous_webhook_secret"), legacy)
        .value(Alias::new("previous_webhook_secret_expires_at"), until)
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    assert_eq!(db.execute(&update).await.unwrap().rows_affected(), 1);
    id
}

/// The secrets a delivery to `id` may be signed with now, soonest expiry last.
async fn candidates(db: &DatabaseConnection, id: Uuid) -> Vec<String> {
    let record = integration::Entity::find_by_id(id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let now = Utc::now();
    WebhookSecrets::open(&keyring(), &record, now)
        .unwrap()
        .candidates(now)
        .into_iter()
        .map(|(secret, _)| secret.expose_secret().to_string())
        .collect()
}

async fn legacy_column_readable(db: &DatabaseConnection) -> bool {
    // Qualified: SQLite reads an unknown double-quoted name alone as a string literal.
    let select = Query::select()
        .column((
            Alias::new("integrations"),
            Alias::new("previous_webhook_secret"),
        ))
        .from(Alias::new("integrations"))
        .to_owned();
    db.query_all(&select).await.is_ok()
}

async fn legacy_previous_secrets_are_folded_then_their_columns_dropped(kind: Db) {
    let Some((_database, db)) = previous_release(kind).await else {
        return;
    };
    let ring = keyring();
    let now = Utc::now();
    let live = with_legacy(&db, 1, true, &ring, "previous", now + Duration::hours(1)).await;
    // One that already has a grace list from a later rotation: both are kept.
    let both = with_legacy(&db, 2, true, &ring, "legacy-b", now + Duration::hours(2)).await;
    let graced = [grace::GraceSecret {
        secret: "graced-b".into(),
        valid_until: now + Duration::hours(3),
    }];
    let mut row: integration::ActiveModel = integration::Entity::find_by_id(both)
        .one(&db)
        .await
        .unwrap()
        .unwrap()
        .into();
    row.webhook_secret_grace =
        Set(grace::seal_grace(&ring, both, &graced).map(|s| s.into_stored()));
    row.update(&db).await.unwrap();
    let ended = with_legacy(&db, 3, true, &ring, "ended", now - Duration::minutes(1)).await;
    let disconnected = with_legacy(&db, 4, false, &ring, "gone", now + Duration::hours(1)).await;
    // Before: the legacy value does not count any more (the code reads the grace list only).
    assert_eq!(candidates(&db, live).await, ["current"]);

    let report = migrate(&db, &ring).await.unwrap();
    assert_eq!(
        report,
        FoldReport {
            folded: 2,
            cleared: 2
        }
    );
    assert!(Migrator::get_pending_migrations(&db)
        .await
        .unwrap()
        .is_empty());
    assert!(
        !legacy_column_readable(&db).await,
        "the columns are dropped"
    );
    assert_eq!(candidates(&db, live).await, ["current", "previous"]);
    assert_eq!(
        candidates(&db, both).await,
        ["current", "legacy-b", "graced-b"]
    );
    assert_eq!(candidates(&db, ended).await, ["current"]);
    let gone = integration::Entity::find_by_id(disconnected)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.webhook_secret_grace, None);
    // The folded secret keeps its own expiry.
    let record = integration::Entity::find_by_id(live)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let later = now + Duration::hours(1) + Duration::seconds(1);
    let secrets = WebhookSecrets::open(&ring, &record, later).unwrap();
    assert_eq!(
        secrets.candidates(later).len(),
        1,
        "only the current one after"
    );

    // Again: nothing to do.
    assert_eq!(migrate(&db, &ring).await.unwrap(), FoldReport::default());
}

async fn an_unopenable_legacy_secret_stops_the_migration_and_drops_nothing(kind: Db) {
    let Some((_database, db)) = previous_release(kind).await else {
        return;
    };
    let unknown = Keyring::new(&EncryptionKey([9; 32]), &[]);
    let id = with_legacy(
        &db,
        1,
        true,
        &unknown,
        "sealed-elsewhere",
        Utc::now() + Duration::hours(1),
    )
    .await;

    let err = migrate(&db, &keyring()).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Undecryptable { row, .. } if row == id),
        "{err}"
    );
    assert!(err.to_string().contains(&id.to_string()));
    assert!(!err.to_string().contains("sealed-elsewhere"));
    assert!(legacy_column_readable(&db).await, "nothing dropped");
    let pending = Migrator::get_pending_migrations(&db).await.unwrap();
    assert_eq!(
        pending[0].name(),
        DROP_LEGACY_PREVIOUS_SECRET,
        "19 not applied"
    );
    // The migration on its own refuses too, naming the way out.
    let alone = Migrator::up(&db, None).await.unwrap_err().to_string();
    assert!(alone.contains("integration-service migrate"), "{alone}");
    assert!(legacy_column_readable(&db).await);
}
