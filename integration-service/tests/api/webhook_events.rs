//! Processing webhook events over gRPC as an internal consumer does: the leased stream,
//! acknowledgements, retries with backoff up to the dead letter, lease expiry, several
//! service replicas on one database, listing and replay. On SQLite and PostgreSQL.

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration, entities::webhook_event},
    webhooks::{retry, signature::github_signature},
};
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, GetEventRequest, Header, ListEventsRequest,
    MarkProcessedRequest, ReceiveWebhookRequest, RecordErrorRequest, ReplayEventRequest,
    SubscribeEventsRequest, WebhookEvent,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use test_support::{dual_test, TestApp, TEST_ENCRYPTION_KEY};
use tonic::{transport::Channel, Code, Request, Streaming};
use uuid::Uuid;

const SECRET: &str = "consumer-test-secret";

type Client = WebhookServiceClient<Channel>;

pub(crate) async fn client(url: &str) -> Client {
    WebhookServiceClient::connect(url.to_string())
        .await
        .unwrap()
}

fn authorized<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A connected GitHub integration of organization `org` with a webhook secret.
pub(crate) async fn github_integration(app: &TestApp, org: i64) -> Uuid {
    app.owner(org).await;
    let record = store::integrations::get_or_create(&app.db, org, "github")
        .await
        .unwrap();
    let id = record.id;
    let bytes: [u8; 32] = hex::decode(TEST_ENCRYPTION_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let secret = Keyring::new(&EncryptionKey(bytes), &[])
        .seal(SecretColumn::WebhookSecret, id, SECRET)
        .into_stored();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(secret));
    active.update(&app.db).await.unwrap();
    id
}

/// Delivers a signed GitHub event straight to the service; answers the event id.
pub(crate) async fn deliver(
    client: &mut Client,
    integration: Uuid,
    event: &str,
    delivery: &str,
) -> String {
    let body = format!(r#"{{"delivery":"{delivery}"}}"#).into_bytes();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", event.to_string()),
        ("x-github-delivery", delivery.to_string()),
        (
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), &body),
        ),
    ]
    .into_iter()
    .map(|(name, value)| Header {
        name: name.into(),
        value: value.into_bytes(),
    })
    .collect();
    let answer = client
        .receive_webhook(ReceiveWebhookRequest {
            provider: "github".into(),
            integration_id: Some(integration.to_string()),
            headers,
            body: body.into(),
            query: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.http_status, 200, "{}", answer.body_json);
    answer.event_id.unwrap()
}

async fn subscribe(
    client: &mut Client,
    token: &str,
    request: SubscribeEventsRequest,
) -> Streaming<WebhookEvent> {
    client
        .subscribe_events(authorized(token, request))
        .await
        .unwrap()
        .into_inner()
}

/// The next event of the stream, failing the test after `within`.
async fn next(stream: &mut Streaming<WebhookEvent>, within: Duration) -> WebhookEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an event within the time limit")
        .unwrap()
        .expect("stream open")
}

/// Whether the stream stays silent for `during`.
async fn silent(stream: &mut Streaming<WebhookEvent>, during: Duration) -> bool {
    tokio::time::timeout(during, stream.message())
        .await
        .is_err()
}

async fn row(app: &TestApp, id: &str) -> webhook_event::Model {
    webhook_event::Entity::find_by_id(Uuid::parse_str(id).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().into()
}

const WAIT: Duration = Duration::from_secs(5);

dual_test!(
    consumer_gets_leased_events_matching_its_filter_and_acknowledges,
    errors_are_retried_with_backoff_then_dead,
    unacknowledged_events_are_redelivered_after_the_lease,
    two_replicas_lease_disjoint_events,
    consumers_must_be_internal_services,
    events_are_listed_paginated_and_replayed,
    hostile_page_tokens_are_invalid_arguments,
    unknown_providers_are_resolved_through_the_catalog,
    a_page_of_events_is_bounded_in_bytes_whatever_the_payloads,
);

/// One large delivery used to make every page of its integration larger than the 4 MiB a
/// gRPC client accepts. A page is now summaries (GetEvent reads one whole), or — asked for —
/// payloads within a byte budget, the rest flagged `payload_omitted`.
async fn a_page_of_events_is_bounded_in_bytes_whatever_the_payloads(app: TestApp) {
    use prost::Message;
    let id = github_integration(&app, 1).await;
    let (_, owner) = app.owner(1).await;
    let mut client = client(&app.grpc_url).await;
    let pad = "a".repeat(700 * 1024);
    for n in 0..4 {
        let body = format!(r#"{{"delivery":"big-{n}","pad":"{pad}"}}"#).into_bytes();
        let headers = [
            ("content-type", "application/json".to_string()),
            ("x-github-event", "push".to_string()),
            ("x-github-delivery", format!("big-{n}")),
            (
                "x-hub-signature-256",
                github_signature(SECRET.as_bytes(), &body),
            ),
        ]
        .into_iter()
        .map(|(name, value)| Header {
            name: name.into(),
            value: value.into_bytes(),
        })
        .collect();
        let answer = client
            .receive_webhook(ReceiveWebhookRequest {
                provider: "github".into(),
                integration_id: Some(id.to_string()),
                headers,
                body: body.into(),
                query: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.http_status, 200);
    }
    let page = |include_payloads: bool| {
        authorized(
            &owner,
            ListEventsRequest {
                integration_id: "github".into(),
                page_size: 10,
                include_payloads,
                ..Default::default()
            },
        )
    };
    let summaries = client.list_events(page(false)).await.unwrap().into_inner();
    assert_eq!(summaries.events.len(), 4);
    assert!(summaries
        .events
        .iter()
        .all(|e| e.payload_omitted && e.payload_json.is_empty()));
    assert!(
        summaries.encoded_len() < 16 * 1024,
        "{}",
        summaries.encoded_len()
    );
    let with_payloads = client.list_events(page(true)).await.unwrap().into_inner();
    assert!(with_payloads.encoded_len() < 2 * 1024 * 1024);
    let carried: Vec<bool> = with_payloads
        .events
        .iter()
        .map(|e| !e.payload_omitted)
        .collect();
    assert_eq!(
        carried,
        [true, false, false, false],
        "the newest within 1 MiB"
    );
    let newest: serde_json::Value =
        serde_json::from_str(&with_payloads.events[0].payload_json).unwrap();
    assert_eq!(newest["delivery"], "big-3");
    // GetEvent reads any one whole.
    let oldest = client
        .get_event(authorized(
            &owner,
            GetEventRequest {
                integration_id: "github".into(),
                event_id: with_payloads.events[3].id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!oldest.payload_omitted);
    assert!(oldest.payload_json.len() > 700 * 1024);
}

async fn consumer_gets_leased_events_matching_its_filter_and_acknowledges(app: TestApp) {
    let mine = github_integration(&app, 1).await;
    let other = github_integration(&app, 2).await;
    let mut client = client(&app.grpc_url).await;
    let token = app.service_token();
    let mut stream = subscribe(
        &mut client,
        &token,
        SubscribeEventsRequest {
            organization_id: Some(1),
            provider: Some("github".into()),
            event_types: vec!["push".into(), "ping".into()],
            lease_seconds: Some(60),
            prefetch: None,
        },
    )
    .await;
    deliver(&mut client, mine, "ping", "d-ping").await;
    deliver(&mut client, other, "push", "d-other-org").await;
    deliver(&mut client, mine, "issues", "d-other-type").await;
    let push = deliver(&mut client, mine, "push", "d-push").await;

    let event = next(&mut stream, WAIT).await;
    assert_eq!(event.id, push);
    assert_eq!(event.integration_id, mine.to_string());
    assert_eq!(event.organization_id, 1);
    assert_eq!(event.provider, "github");
    assert_eq!(event.event_type, "push");
    assert_eq!(event.status.as_str(), "DELIVERED");
    assert_eq!(event.retry_count, 1);
    assert_eq!(event.delivery_id.as_deref(), Some("d-push"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&event.payload_json).unwrap(),
        serde_json::json!({"delivery": "d-push"})
    );
    let lease = at(event.lease_expires_at.as_deref().unwrap());
    let lease_left = (lease - Utc::now()).num_seconds();
    assert!((55..=60).contains(&lease_left), "{lease_left}");
    // Ping needs no consumer; other organizations' and other types' events are not ours.
    assert!(silent(&mut stream, Duration::from_millis(800)).await);

    client
        .mark_processed(authorized(
            &token,
            MarkProcessedRequest {
                event_id: push.clone(),
            },
        ))
        .await
        .unwrap();
    let stored = row(&app, &push).await;
    assert_eq!(stored.status.as_str(), "PROCESSED");
    assert!(stored.processed);
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.lease_owner, None);
    // Acknowledging twice is harmless.
    client
        .mark_processed(authorized(&token, MarkProcessedRequest { event_id: push }))
        .await
        .unwrap();
    let unknown = client
        .mark_processed(authorized(
            &token,
            MarkProcessedRequest {
                event_id: Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn errors_are_retried_with_backoff_then_dead(app: TestApp) {
    let id = github_integration(&app, 1).await;
    let mut client = client(&app.grpc_url).await;
    let token = app.service_token();
    let mut stream = subscribe(
        &mut client,
        &token,
        SubscribeEventsRequest {
            lease_seconds: Some(60),
            ..Default::default()
        },
    )
    .await;
    let event_id = deliver(&mut client, id, "push", "d-fail").await;
    for attempt in 1..=retry::MAX_ATTEMPTS {
        let event = next(&mut stream, WAIT).await;
        assert_eq!(event.id, event_id);
        assert_eq!(event.retry_count, attempt);
        let before = Utc::now();
        let answer = client
            .record_error(authorized(
                &token,
                RecordErrorRequest {
                    event_id: event_id.clone(),
                    error: format!("consumer failed #{attempt}"),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let stored = row(&app, &event_id).await;
        assert_eq!(
            stored.last_error.as_deref(),
            Some(format!("consumer failed #{attempt}").as_str())
        );
        if attempt == retry::MAX_ATTEMPTS {
            assert_eq!(answer.status.as_str(), "DEAD");
            assert_eq!(answer.next_attempt_at, None);
            assert_eq!(stored.status.as_str(), "DEAD");
            break;
        }
        assert_eq!(answer.status.as_str(), "PENDING");
        let delay = (at(answer.next_attempt_at.as_deref().unwrap()) - before).num_milliseconds();
        let base = retry::backoff_ms(attempt);
        assert!(
            (base - base / 5 - 50..=base + base / 5 + 50).contains(&delay),
            "attempt {attempt}: delay {delay} ms, base {base} ms"
        );
        if attempt == 1 {
            // The first retry really waits for its time, then comes back by itself.
            assert!(silent(&mut stream, Duration::from_millis(700)).await);
        } else {
            // Later delays are long: bring the retry forward instead of sleeping.
            let mut active: webhook_event::ActiveModel = stored.into();
            active.next_attempt_at = Set(Some(Utc::now()));
            active.update(&app.db).await.unwrap();
        }
    }
    // Dead events are not delivered again.
    assert!(silent(&mut stream, Duration::from_millis(800)).await);
    let dead = row(&app, &event_id).await;
    assert_eq!(dead.retry_count, retry::MAX_ATTEMPTS);
    let late = client
        .record_error(authorized(
            &token,
            RecordErrorRequest {
                event_id,
                error: "again".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
}

async fn unacknowledged_events_are_redelivered_after_the_lease(app: TestApp) {
    let id = github_integration(&app, 1).await;
    let mut client = client(&app.grpc_url).await;
    let token = app.service_token();
    let mut stream = subscribe(
        &mut client,
        &token,
        SubscribeEventsRequest {
            lease_seconds: Some(1),
            ..Default::default()
        },
    )
    .await;
    let event_id = deliver(&mut client, id, "push", "d-lease").await;
    let first = next(&mut stream, WAIT).await;
    assert_eq!(
        (first.id.as_str(), first.retry_count),
        (event_id.as_str(), 1)
    );
    // Not redelivered while the lease holds...
    assert!(silent(&mut stream, Duration::from_millis(600)).await);
    // ...and redelivered once it ran out.
    let second = next(&mut stream, WAIT).await;
    assert_eq!(
        (second.id.as_str(), second.retry_count),
        (event_id.as_str(), 2)
    );
    assert!(
        at(second.lease_expires_at.as_deref().unwrap())
            > at(first.lease_expires_at.as_deref().unwrap())
    );
}

async fn two_replicas_lease_disjoint_events(mut app: TestApp) {
    let id = github_integration(&app, 1).await;
    let replica_url = app.spawn_service_replica().await;
    let mut client_a = client(&app.grpc_url).await;
    let mut client_b = client(&replica_url).await;
    let token = app.service_token();
    let request = || SubscribeEventsRequest {
        lease_seconds: Some(120),
        prefetch: Some(4),
        ..Default::default()
    };
    let mut stream_a = subscribe(&mut client_a, &token, request()).await;
    let mut stream_b = subscribe(&mut client_b, &token, request()).await;
    let total = 40;
    let mut expected = HashSet::new();
    for n in 0..total {
        let client = if n % 2 == 0 {
            &mut client_a
        } else {
            &mut client_b
        };
        expected.insert(deliver(client, id, "push", &format!("d-{n}")).await);
    }
    let mut seen_a = HashSet::new();
    let mut seen_b = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen_a.len() + seen_b.len() < total && tokio::time::Instant::now() < deadline {
        tokio::select! {
            Ok(Some(event)) = stream_a.message() => { assert!(seen_a.insert(event.id)); }
            Ok(Some(event)) = stream_b.message() => { assert!(seen_b.insert(event.id)); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    assert!(
        seen_a.is_disjoint(&seen_b),
        "an event was leased twice at once"
    );
    let union: HashSet<_> = seen_a.union(&seen_b).cloned().collect();
    assert_eq!(union, expected);
    assert!(
        !seen_a.is_empty() && !seen_b.is_empty(),
        "both replicas worked: {} / {}",
        seen_a.len(),
        seen_b.len()
    );
    // Leases held: nothing comes twice.
    assert!(silent(&mut stream_a, Duration::from_millis(500)).await);
    assert!(silent(&mut stream_b, Duration::from_millis(500)).await);
    let owners: HashSet<Option<String>> = webhook_event::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.lease_owner)
        .collect();
    assert_eq!(owners.len(), 2, "{owners:?}");
}

async fn consumers_must_be_internal_services(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let mut client = client(&app.grpc_url).await;
    let denied = client
        .subscribe_events(authorized(&owner, SubscribeEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = client
        .subscribe_events(Request::new(SubscribeEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let denied = client
        .mark_processed(authorized(
            &owner,
            MarkProcessedRequest {
                event_id: Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad_lease = client
        .subscribe_events(authorized(
            &app.service_token(),
            SubscribeEventsRequest {
                lease_seconds: Some(0),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_lease.code(), Code::InvalidArgument);
}

async fn events_are_listed_paginated_and_replayed(app: TestApp) {
    let id = github_integration(&app, 1).await;
    github_integration(&app, 2).await;
    let (_, owner) = app.owner(1).await;
    let (_, stranger) = app.owner(2).await;
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    let mut client = client(&app.grpc_url).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(deliver(&mut client, id, "push", &format!("d-{n}")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let list = |token: &str, page_token: &str| {
        authorized(
            token,
            ListEventsRequest {
                integration_id: "github".into(),
                page_size: 2,
                page_token: page_token.into(),
                status: None,
                ..Default::default()
            },
        )
    };
    let first = client
        .list_events(list(&owner, ""))
        .await
        .unwrap()
        .into_inner();
    let first_ids: Vec<&str> = first.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(first_ids, [ids[2].as_str(), ids[1].as_str()]);
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_events(list(&owner, &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    let second_ids: Vec<&str> = second.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(second_ids, [ids[0].as_str()]);
    assert_eq!(second.next_page_token, "");
    assert_eq!(second.events[0].status, "PENDING");
    assert_eq!(second.events[0].retry_count, 0);
    let denied = client.list_events(list(&member, "")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Organization 2's github integration has no events; organization 1's are not visible.
    let theirs = client
        .list_events(list(&stranger, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.events.is_empty());

    // A dead event replayed is due again, as a new series of attempts.
    let stored = row(&app, &ids[0]).await;
    let mut active: webhook_event::ActiveModel = stored.into();
    active.status = Set(webhook_event::EventStatus::Dead);
    active.retry_count = Set(retry::MAX_ATTEMPTS);
    active.last_error = Set(Some("boom".into()));
    active.update(&app.db).await.unwrap();
    let dead = client
        .list_events(authorized(
            &owner,
            ListEventsRequest {
                integration_id: id.to_string(),
                page_size: 0,
                page_token: String::new(),
                status: Some("dead".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.events.len(), 1);
    assert_eq!(dead.events[0].last_error.as_deref(), Some("boom"));
    let foreign = client
        .replay_event(authorized(
            &stranger,
            ReplayEventRequest {
                event_id: ids[0].clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    let replayed = client
        .replay_event(authorized(
            &owner,
            ReplayEventRequest {
                event_id: ids[0].clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.status.as_str(), "PENDING");
    assert_eq!(replayed.retry_count, 0);
    assert_eq!(replayed.last_error, None);
    let mut stream = subscribe(
        &mut client,
        &app.service_token(),
        SubscribeEventsRequest::default(),
    )
    .await;
    let mut delivered = HashSet::new();
    for _ in 0..3 {
        delivered.insert(next(&mut stream, WAIT).await.id);
    }
    assert!(delivered.contains(&ids[0]));
}

async fn hostile_page_tokens_are_invalid_arguments(app: TestApp) {
    let id = github_integration(&app, 1).await;
    let (_, owner) = app.owner(1).await;
    let mut client = client(&app.grpc_url).await;
    deliver(&mut client, id, "push", "d-1").await;
    // The old offset tokens above i64::MAX made the database driver panic; cursors are opaque.
    for token in [
        "9223372036854775808",
        "18446744073709551615",
        "-1",
        "not base64 at all",
        "djF8eWVzdGVyZGF5fG5vdC1hLXV1aWQ",
    ] {
        let status = client
            .list_events(authorized(
                &owner,
                ListEventsRequest {
                    integration_id: "github".into(),
                    page_token: token.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
        assert_eq!(status.message(), "Invalid page token");
    }
    let bad_status = client
        .list_events(authorized(
            &owner,
            ListEventsRequest {
                integration_id: "github".into(),
                status: Some("GONE".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_status.code(), Code::InvalidArgument);
    // The service still answers, and nothing changed.
    let page = client
        .list_events(authorized(
            &owner,
            ListEventsRequest {
                integration_id: "github".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
}

async fn unknown_providers_are_resolved_through_the_catalog(app: TestApp) {
    let (_, owner) = app.owner(1).await;
    let mut client = client(&app.grpc_url).await;
    let status = client
        .list_events(authorized(
            &owner,
            ListEventsRequest {
                integration_id: "nosuchprovider".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let info = details.error_info().expect("error info");
    assert!(info.metadata["details"].starts_with("unknown provider \"nosuchprovider\""));
    // A catalog provider that was never connected has no events to list.
    let status = client
        .list_events(authorized(
            &owner,
            ListEventsRequest {
                integration_id: "slack".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
