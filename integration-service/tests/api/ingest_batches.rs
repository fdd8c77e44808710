//! The group commit's batches as the store writes them: every row answers the id stored for
//! its delivery — its own when new, the earlier one when a redelivery, whether the earlier row
//! was committed before or sits in the same batch. On SQLite and PostgreSQL. And the writer's
//! grouping: a stalled transaction does not hold up the deliveries queued behind it.

use std::time::Duration;

use chrono::Utc;
use integration_service::store::{entities::webhook_event, event_outbox, webhook_events};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait, Statement, TransactionTrait};
use test_support::{dual_test, Db, TestApp};
use uuid::Uuid;

use crate::webhook_events::{client, deliver, github_integration};

fn row(integration: Uuid, delivery: &str) -> webhook_events::NewEvent {
    webhook_events::NewEvent {
        id: Uuid::new_v4(),
        integration_id: integration,
        event_type: "push".into(),
        delivery_id: Some(delivery.into()),
        payload: format!(r#"{{"delivery":"{delivery}"}}"#),
        headers: r#"{"x-github-event":"push"}"#.into(),
        processed: false,
        received_at: Utc::now(),
    }
}

dual_test!(redeliveries_in_a_batch_answer_the_stored_ids);

async fn redeliveries_in_a_batch_answer_the_stored_ids(app: TestApp) {
    let mine = github_integration(&app, 1).await;
    let other = github_integration(&app, 2).await;
    let first: Vec<_> = ["a", "b", "c"].iter().map(|d| row(mine, d)).collect();
    let ids = webhook_events::insert_batch(&app.db, &first).await.unwrap();
    assert_eq!(ids, first.iter().map(|r| r.id).collect::<Vec<_>>());

    // Two redeliveries of committed rows, one new delivery twice in the batch, the same
    // delivery id under another integration (a different delivery), and a new one.
    let second = vec![
        row(mine, "b"),
        row(mine, "d"),
        row(mine, "a"),
        row(mine, "d"),
        row(other, "a"),
        row(mine, "e"),
    ];
    let ids = webhook_events::insert_batch(&app.db, &second)
        .await
        .unwrap();
    assert_eq!(ids[0], first[1].id, "a redelivery answers the stored id");
    assert_eq!(ids[2], first[0].id, "a redelivery answers the stored id");
    assert_eq!(
        ids[1], ids[3],
        "one delivery twice in a batch is stored once"
    );
    assert!(
        ids[1] == second[1].id || ids[1] == second[3].id,
        "the batch's own row is the stored one"
    );
    assert_eq!(
        ids[4], second[4].id,
        "another integration's delivery is its own"
    );
    assert_eq!(ids[5], second[5].id);

    let stored = webhook_event::Entity::find().count(&app.db).await.unwrap();
    assert_eq!(
        stored, 6,
        "a, b, c, d, e of one integration and a of the other"
    );
    for id in ids {
        assert!(
            webhook_event::Entity::find_by_id(id)
                .one(&app.db)
                .await
                .unwrap()
                .is_some(),
            "every answered id is a stored row"
        );
        assert!(
            event_outbox::is_waiting(&app.db, id).await.unwrap(),
            "every stored event waits in the outbox, written with it"
        );
    }
    // One outbox row per stored event: none for the redeliveries.
    let outbox = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM event_outbox",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outbox.try_get::<i64>("", "n").unwrap(), 6);
}

/// Rows that arrive while a transaction is in flight wait for it to commit and go together
/// (`webhooks::ingest`), but not for ever: here one delivery's transaction waits on a lock (an
/// open transaction of the test's own holds the same delivery's key, as another replica
/// inserting the same redelivery would) and a delivery queued behind it is still answered at
/// once. PostgreSQL only: SQLite has a single writer, whose lock every write waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_does_not_hold_up_the_deliveries_behind_it() {
    let Some(app) = test_support::spawn_app(Db::Postgres).await else {
        return;
    };
    let integration = github_integration(&app, 1).await;
    let blocker = app.db.begin().await.unwrap();
    blocker
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "INSERT INTO webhook_events (id, integration_id, event_type, delivery_id, payload, \
             headers, processed, status, retry_count, received_at) \
             VALUES ($1, $2, 'push', 'held', '{}', '{}', false, 'PENDING', 0, now())",
            [Uuid::new_v4().into(), integration.into()],
        ))
        .await
        .unwrap();

    let url = app.grpc_url.clone();
    let held = tokio::spawn(async move {
        let mut client = client(&url).await;
        deliver(&mut client, integration, "push", "held").await
    });
    // The held delivery's transaction is in flight, waiting for the blocker's key.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the held delivery waits on the lock");

    let mut client = client(&app.grpc_url).await;
    let free = tokio::time::timeout(
        Duration::from_secs(3),
        deliver(&mut client, integration, "push", "free"),
    )
    .await
    .expect("a delivery queued behind a stalled transaction is answered without waiting for it");
    assert!(!held.is_finished(), "the lock still holds the other one");
    let stored = webhook_event::Entity::find_by_id(free.parse::<Uuid>().unwrap())
        .one(&app.db)
        .await
        .unwrap();
    assert!(stored.is_some(), "answered means committed");

    // The blocker gives up its row: the held delivery is stored and answered.
    blocker.rollback().await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held delivery is answered once the lock is gone")
        .unwrap();
    assert_ne!(held, free);
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        2
    );
}
