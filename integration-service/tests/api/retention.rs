//! The retention purge on SQLite and PostgreSQL: exactly the processed and dead events older
//! than the retention go, in batches; pending, leased and recent ones stay. And the backlog
//! gauges' query over the same kinds of rows.

use std::time::Duration;

use chrono::Utc;
use integration_service::{
    store::{self, entities::webhook_event, webhook_events},
    webhooks::retention,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use test_support::{dual_test, TestApp};
use uuid::Uuid;

dual_test!(retention_purges_exactly_the_old_finished_events);
dual_test!(the_backlog_counts_by_status_and_dates_the_oldest_waiting_event);

async fn insert(app: &TestApp, integration: Uuid, status: &str, age_days: i64) -> Uuid {
    let id = Uuid::new_v4();
    webhook_event::ActiveModel {
        id: Set(id),
        integration_id: Set(integration),
        event_type: Set("push".into()),
        delivery_id: Set(Some(id.to_string())),
        payload: Set(serde_json::json!({})),
        headers: Set(None),
        processed: Set(status == webhook_events::PROCESSED),
        status: Set(webhook_event::EventStatus::parse(status).unwrap()),
        retry_count: Set(0),
        last_error: Set(None),
        next_attempt_at: Set(None),
        lease_expires_at: Set(None),
        lease_owner: Set(None),
        processed_at: Set(None),
        received_at: Set(Utc::now() - chrono::Duration::days(age_days)),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

async fn retention_purges_exactly_the_old_finished_events(app: TestApp) {
    app.owner(1).await;
    let integration = store::integrations::get_or_create(&app.db, 1, "github")
        .await
        .unwrap()
        .id;
    let mut old_finished = Vec::new();
    for status in [webhook_events::PROCESSED, webhook_events::DEAD] {
        for _ in 0..3 {
            old_finished.push(insert(&app, integration, status, 31).await);
        }
    }
    let mut kept = vec![
        insert(&app, integration, webhook_events::PENDING, 90).await,
        insert(&app, integration, webhook_events::DELIVERED, 90).await,
    ];
    for status in [webhook_events::PROCESSED, webhook_events::DEAD] {
        kept.push(insert(&app, integration, status, 29).await);
    }

    // Batches of 4: two statements for the six old finished rows.
    let deleted = retention::purge(&app.db, Duration::from_secs(30 * 24 * 3600), 4, false)
        .await
        .unwrap();
    assert_eq!(deleted, 6);
    let mut left: Vec<Uuid> = webhook_event::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    left.sort();
    kept.sort();
    assert_eq!(left, kept);
    assert_eq!(
        retention::purge(&app.db, Duration::from_secs(30 * 24 * 3600), 4, false)
            .await
            .unwrap(),
        0
    );
}

async fn the_backlog_counts_by_status_and_dates_the_oldest_waiting_event(app: TestApp) {
    app.owner(1).await;
    let integration = store::integrations::get_or_create(&app.db, 1, "github")
        .await
        .unwrap()
        .id;
    let empty = webhook_events::backlog(&app.db).await.unwrap();
    assert!(empty.by_status.is_empty() && empty.oldest_unprocessed.is_none());

    // Finished events older than any waiting one do not date the backlog.
    insert(&app, integration, webhook_events::PROCESSED, 100).await;
    insert(&app, integration, webhook_events::DEAD, 95).await;
    insert(&app, integration, webhook_events::PENDING, 10).await;
    insert(&app, integration, webhook_events::PENDING, 3).await;
    let backlog = webhook_events::backlog(&app.db).await.unwrap();
    let age = |backlog: &webhook_events::Backlog| {
        (Utc::now() - backlog.oldest_unprocessed.expect("a waiting event")).num_hours()
    };
    assert_eq!(age(&backlog), 10 * 24, "the oldest PENDING event");

    // A leased (DELIVERED) event is still waiting for its consumer's answer.
    insert(&app, integration, webhook_events::DELIVERED, 20).await;
    let backlog = webhook_events::backlog(&app.db).await.unwrap();
    assert_eq!(age(&backlog), 20 * 24, "the oldest DELIVERED event");
    let mut counts: Vec<(&str, u64)> = backlog
        .by_status
        .iter()
        .map(|(status, count)| (status.as_str(), *count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("DEAD", 1),
            ("DELIVERED", 1),
            ("PENDING", 2),
            ("PROCESSED", 1)
        ]
    );
}
