//! The event sink end to end with the real `nats-server`, on SQLite and PostgreSQL: deliveries
//! through the gateway arrive on their subject with `Nats-Msg-Id` and the REST detail as body;
//! nothing is published before its row is committed; a broker outage delays forwarding and
//! loses nothing; a service SIGKILLed mid-forwarding and restarted leaves exactly one message
//! per event; two replicas running at once (one holds the forwarding lease, the other stands
//! by) leave exactly one message per event; retention keeps unforwarded events while the sink
//! is on; one replica at a time holds the lease; a backlog of large events goes in several
//! rounds, each holding a bounded amount of payload.
//!
//! Tests on the shared broker (`127.0.0.1:4222`) each use a stream and subject prefix of their
//! own; the outage test starts a `nats-server` of its own.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, message::StreamMessage};
use chrono::Utc;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration, event_outbox, webhook_events, webhook_events::NewEvent},
    webhooks::{retention, signature::github_signature},
};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Statement, TransactionTrait};
use serde_json::Value;
use test_support::{
    dual_db_test, scrape::Scrape, spawn_app_with, Db, TestApp, TEST_ENCRYPTION_KEY,
};
use uuid::Uuid;

const SHARED_BROKER: &str = "nats://127.0.0.1:4222";
const SECRET: &str = "sink-test-secret";
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A stream name and subject prefix no other test uses.
struct Names {
    stream: String,
    prefix: String,
}

impl Names {
    fn unique() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        Self {
            stream: format!("SINK_TEST_{id}"),
            prefix: format!("sinktest{id}"),
        }
    }

    /// The service variables that turn the sink on towards `url`.
    fn env(&self, url: &str) -> Vec<(String, String)> {
        vec![
            ("EVENT_SINK_URL".into(), url.into()),
            ("EVENT_SINK_STREAM".into(), self.stream.clone()),
            ("EVENT_SINK_SUBJECT_PREFIX".into(), self.prefix.clone()),
        ]
    }
}

fn borrowed(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A connected GitHub integration of organization `org` whose webhook secret is `SECRET`.
async fn github_integration(app: &TestApp, org: i64) -> Uuid {
    app.owner(org).await;
    let record = store::integrations::get_or_create(&app.db, org, "github")
        .await
        .unwrap();
    let id = record.id;
    let key: [u8; 32] = hex::decode(TEST_ENCRYPTION_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let sealed = Keyring::new(&EncryptionKey(key), &[])
        .seal(SecretColumn::WebhookSecret, id, SECRET)
        .into_stored();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.webhook_secret = Set(Some(sealed));
    active.update(&app.db).await.unwrap();
    id
}

/// A signed GitHub delivery through the gateway: (HTTP status, event id when stored).
async fn deliver(
    app: &TestApp,
    integration: Uuid,
    event: &str,
    delivery: &str,
) -> (StatusCode, Option<String>) {
    deliver_padded(app, integration, event, delivery, 0).await
}

/// As `deliver`, the body padded with `padding` bytes.
async fn deliver_padded(
    app: &TestApp,
    integration: Uuid,
    event: &str,
    delivery: &str,
    padding: usize,
) -> (StatusCode, Option<String>) {
    let body = format!(
        r#"{{"delivery":"{delivery}","nested":{{"n":[1,2,3]}},"padding":"{}"}}"#,
        "x".repeat(padding)
    );
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap_or(Value::Null);
    (status, json["eventId"].as_str().map(str::to_string))
}

/// `count` PENDING GitHub push events of `integration`, stored directly (one group commit
/// per 500), oldest first; answers their ids in order of receipt.
async fn store_events(app: &TestApp, integration: Uuid, count: usize) -> Vec<Uuid> {
    let start = Utc::now() - chrono::Duration::seconds(60);
    let rows: Vec<NewEvent> = (0..count)
        .map(|i| NewEvent {
            id: Uuid::new_v4(),
            integration_id: integration,
            event_type: "push".into(),
            delivery_id: Some(format!("bulk-{i}")),
            payload: format!(r#"{{"n":{i}}}"#),
            headers: r#"{"x-github-event":"push"}"#.into(),
            processed: false,
            received_at: start + chrono::Duration::milliseconds(i as i64),
        })
        .collect();
    for chunk in rows.chunks(500) {
        webhook_events::insert_batch(&app.db, chunk).await.unwrap();
    }
    rows.iter().map(|row| row.id).collect()
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("a NATS connection"))
}

/// Every message of `stream`, in stream order; none when the stream does not exist (yet).
async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<StreamMessage> {
    let Ok(mut handle) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let state = handle.info().await.unwrap().state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        messages.push(handle.get_raw_message(sequence).await.unwrap());
    }
    messages
}

/// How many messages `stream` holds (0 when it does not exist yet).
async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

fn message_id(message: &StreamMessage) -> String {
    message
        .headers
        .get("Nats-Msg-Id")
        .expect("a Nats-Msg-Id header")
        .to_string()
}

/// Polls `check` every 50 ms until it holds, failing the test after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holder of `stream`'s forwarding lease, while it runs.
async fn lease_holder(app: &TestApp, stream: &str) -> Option<String> {
    let rows = app
        .db
        .query_all_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            match app.db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    "SELECT owner, lease_until FROM event_sink_leases WHERE stream = $1"
                }
                _ => "SELECT owner, lease_until FROM event_sink_leases WHERE stream = ?",
            },
            [stream.into()],
        ))
        .await
        .unwrap();
    rows.first().and_then(|row| {
        let until: chrono::DateTime<Utc> = row.try_get("", "lease_until").unwrap();
        (until > Utc::now()).then(|| row.try_get::<String>("", "owner").unwrap())
    })
}

/// Events waiting in the outbox (not yet acknowledged by JetStream).
async fn unforwarded(app: &TestApp) -> i64 {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM event_outbox",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// Exactly one message per event of `ids` and nothing else: total and distinct ids.
async fn assert_one_message_per_event(js: &jetstream::Context, stream: &str, ids: &[Uuid]) {
    let messages = stream_messages(js, stream).await;
    let distinct: HashSet<String> = messages.iter().map(message_id).collect();
    let expected: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    assert_eq!(messages.len(), ids.len(), "total messages on the stream");
    assert_eq!(
        distinct.len(),
        ids.len(),
        "distinct Nats-Msg-Id on the stream"
    );
    assert_eq!(distinct, expected);
}

dual_db_test!(
    events_arrive_on_their_subject_with_their_id_and_the_rest_detail_as_body,
    an_event_over_max_payload_goes_without_payload_and_says_so,
    large_events_are_forwarded_in_rounds_of_bounded_size,
    nothing_is_published_before_the_row_is_committed,
    a_broker_outage_delays_forwarding_and_loses_nothing,
    a_service_killed_mid_forwarding_leaves_one_message_per_event,
    two_replicas_forwarding_at_once_leave_one_message_per_event,
    retention_keeps_unforwarded_events_while_the_sink_is_on,
    one_replica_at_a_time_holds_the_forwarding_lease,
);

async fn events_arrive_on_their_subject_with_their_id_and_the_rest_detail_as_body(kind: Db) {
    let names = Names::unique();
    let env = names.env(SHARED_BROKER);
    let Some(app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    let org = 4101;
    let integration = github_integration(&app, org).await;
    let (_, owner_token) = app.owner(org).await;
    let mut ids = Vec::new();
    for (event, delivery) in [("push", "d-1"), ("pull_request", "d-2"), ("push", "d-3")] {
        let (status, id) = deliver(&app, integration, event, delivery).await;
        assert_eq!(status, StatusCode::OK);
        ids.push((event, id.expect("an event id")));
    }
    let js = jetstream_at(SHARED_BROKER).await;
    eventually(
        Duration::from_secs(20),
        "three messages on the stream",
        || {
            let js = js.clone();
            let stream = names.stream.clone();
            async move { stream_count(&js, &stream).await == 3 }
        },
    )
    .await;

    let messages = stream_messages(&js, &names.stream).await;
    assert_eq!(messages.len(), 3);
    // One integration: the stream holds its events in order of receipt.
    for (message, (event, id)) in messages.iter().zip(&ids) {
        assert_eq!(
            message.subject.as_str(),
            format!("{}.{org}.github.{event}", names.prefix)
        );
        assert_eq!(message_id(message), *id);
        let body: Value = serde_json::from_slice(&message.payload).expect("a JSON body");
        let detail: Value = app
            .get_as(
                &owner_token,
                &format!("/api/integrations/github/events/{id}"),
            )
            .await
            .json()
            .await
            .unwrap();
        // Nobody consumes over gRPC here: the event is as it was when forwarded.
        assert_eq!(body, detail["data"], "the body is the REST detail's data");
        assert_eq!(body["payload"]["nested"]["n"], serde_json::json!([1, 2, 3]));
        assert_eq!(body["headers"]["x-github-event"], *event);
        let waiting = event_outbox::is_waiting(&app.db, id.parse().unwrap())
            .await
            .unwrap();
        assert!(!waiting, "out of the outbox after the ack");
    }
    // docs/event-sink.md's consumer: a durable pull consumer of the GitHub pushes.
    let pushes = read_pushes(&js, &names, 2).await;
    assert_eq!(pushes, vec![ids[0].1.clone(), ids[2].1.clone()]);

    let scrape = Scrape::fetch(&app.http, &app.service_metrics_url).await;
    assert_eq!(
        scrape.sum("event_sink_forwarded_total", &[("outcome", "published")]),
        3.0
    );
    assert_eq!(
        scrape.sum("event_sink_forwarded_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(unforwarded(&app).await, 0);
}

async fn an_event_over_max_payload_goes_without_payload_and_says_so(kind: Db) {
    let names = Names::unique();
    let env = names.env(SHARED_BROKER);
    let Some(app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    let org = 4107;
    let integration = github_integration(&app, org).await;
    let (_, owner_token) = app.owner(org).await;
    // The shared broker's max_payload is nats-server's default, 1 MiB.
    let (status, big) = deliver_padded(&app, integration, "push", "big", 1_200_000).await;
    assert_eq!(status, StatusCode::OK);
    let (status, small) = deliver(&app, integration, "push", "small").await;
    assert_eq!(status, StatusCode::OK);
    let js = jetstream_at(SHARED_BROKER).await;
    eventually(Duration::from_secs(20), "both events forwarded", || {
        let js = js.clone();
        let stream = names.stream.clone();
        async move { stream_count(&js, &stream).await == 2 }
    })
    .await;
    let messages = stream_messages(&js, &names.stream).await;
    let (big, small) = (big.unwrap(), small.unwrap());
    assert_eq!(message_id(&messages[0]), big);
    assert_eq!(message_id(&messages[1]), small);
    assert_eq!(
        messages[0]
            .headers
            .get("Integrations-Payload-Omitted")
            .map(ToString::to_string)
            .as_deref(),
        Some("max_payload")
    );
    assert!(messages[1]
        .headers
        .get("Integrations-Payload-Omitted")
        .is_none());
    let body: Value = serde_json::from_slice(&messages[0].payload).unwrap();
    let mut detail: Value = app
        .get_as(
            &owner_token,
            &format!("/api/integrations/github/events/{big}"),
        )
        .await
        .json()
        .await
        .unwrap();
    let data = detail["data"].as_object_mut().unwrap();
    assert_eq!(
        data["payload"]["padding"].as_str().map(str::len),
        Some(1_200_000)
    );
    data.remove("payload");
    data.remove("headers");
    assert_eq!(
        body,
        Value::Object(data.clone()),
        "the detail without payload and headers"
    );
    let body: Value = serde_json::from_slice(&messages[1].payload).unwrap();
    assert_eq!(body["payload"]["delivery"], "small");
}

/// A backlog of large events (stored before the forwarder saw them, so their texts are read
/// from the database) is forwarded whole and in order, in rounds that stop at the batch's byte
/// budget (16 MiB) instead of holding every event of the batch in memory at once.
async fn large_events_are_forwarded_in_rounds_of_bounded_size(kind: Db) {
    let names = Names::unique();
    let env = names.env(SHARED_BROKER);
    let Some(app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    let integration = github_integration(&app, 4111).await;
    // 24 events of 900 KB each (under the broker's 1 MiB max_payload): 21.6 MB in all.
    let padding = "x".repeat(900_000);
    let start = Utc::now() - chrono::Duration::seconds(60);
    let rows: Vec<NewEvent> = (0..24)
        .map(|i| NewEvent {
            id: Uuid::new_v4(),
            integration_id: integration,
            event_type: "push".into(),
            delivery_id: Some(format!("large-{i}")),
            payload: format!(r#"{{"n":{i},"padding":"{padding}"}}"#),
            headers: "{}".into(),
            processed: false,
            received_at: start + chrono::Duration::milliseconds(i),
        })
        .collect();
    // One transaction: the forwarder finds all 24 waiting at once.
    webhook_events::insert_batch(&app.db, &rows).await.unwrap();
    let js = jetstream_at(SHARED_BROKER).await;
    eventually(Duration::from_secs(60), "all 24 events forwarded", || {
        let js = js.clone();
        let stream = names.stream.clone();
        async move { stream_count(&js, &stream).await == 24 }
    })
    .await;
    let messages = stream_messages(&js, &names.stream).await;
    for (i, (message, row)) in messages.iter().zip(&rows).enumerate() {
        assert_eq!(
            message_id(message),
            row.id.to_string(),
            "in order of receipt"
        );
        assert!(message
            .headers
            .get("Integrations-Payload-Omitted")
            .is_none());
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body["payload"]["n"], i);
        assert_eq!(
            body["payload"]["padding"].as_str().map(str::len),
            Some(900_000)
        );
    }
    let scrape = Scrape::fetch(&app.http, &app.service_metrics_url).await;
    let rounds = scrape.sum("event_sink_batch_events_count", &[]);
    assert_eq!(scrape.sum("event_sink_batch_events_sum", &[]), 24.0);
    assert!(
        rounds >= 2.0,
        "16 MiB hold 18 of these events (and one read past it), not 24: {rounds} round(s)"
    );
    assert_eq!(unforwarded(&app).await, 0);
}

/// The Rust consumer of docs/event-sink.md: a durable pull consumer of every organization's
/// GitHub pushes, acknowledging each event after handling it; answers the first `count` ids.
async fn read_pushes(js: &jetstream::Context, names: &Names, count: usize) -> Vec<String> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures::StreamExt;

    let stream = js.get_stream(&names.stream).await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "pushes",
            pull::Config {
                durable_name: Some("pushes".into()),
                filter_subject: format!("{}.*.github.push", names.prefix),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut ids = Vec::new();
    while ids.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a push within 10 s")
            .expect("the consumer's stream is open")
            .unwrap();
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event["event_type"], "push");
        ids.push(event["id"].as_str().unwrap().to_string());
        message.ack().await.unwrap();
    }
    ids
}

async fn nothing_is_published_before_the_row_is_committed(kind: Db) {
    let names = Names::unique();
    let env = names.env(SHARED_BROKER);
    let Some(app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    let integration = github_integration(&app, 4102).await;
    let js = jetstream_at(SHARED_BROKER).await;
    // The sink is working: one committed event arrives.
    let (status, first) = deliver(&app, integration, "push", "committed").await;
    assert_eq!(status, StatusCode::OK);
    eventually(
        Duration::from_secs(20),
        "the committed event forwarded",
        || {
            let js = js.clone();
            let stream = names.stream.clone();
            async move { stream_count(&js, &stream).await == 1 }
        },
    )
    .await;

    // A row written (with its outbox row, as the writers do) in a transaction that is still
    // open is not forwarded, however many rounds the forwarder makes meanwhile.
    let pending = Uuid::new_v4();
    let txn = app.db.begin().await.unwrap();
    let backend = txn.get_database_backend();
    let values = match backend {
        sea_orm::DbBackend::Postgres => "$1, $2, $3, $4, CAST($5 AS jsonb), $6",
        _ => "?, ?, ?, ?, ?, ?",
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO webhook_events (id, integration_id, event_type, delivery_id, payload, \
             received_at, processed, status, retry_count) \
             VALUES ({values}, false, 'PENDING', 0)"
        ),
        [
            pending.into(),
            integration.into(),
            "push".into(),
            "uncommitted".into(),
            r#"{"uncommitted":true}"#.into(),
            Utc::now().into(),
        ],
    ))
    .await
    .unwrap();
    let outbox_values = match backend {
        sea_orm::DbBackend::Postgres => "$1, $2",
        _ => "?, ?",
    };
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!("INSERT INTO event_outbox (event_id, received_at) VALUES ({outbox_values})"),
        [pending.into(), Utc::now().into()],
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = stream_messages(&js, &names.stream).await;
    assert_eq!(during.len(), 1, "nothing published before the commit");
    assert_eq!(message_id(&during[0]), first.unwrap());
    txn.commit().await.unwrap();

    eventually(
        Duration::from_secs(20),
        "the event forwarded once committed",
        || {
            let js = js.clone();
            let stream = names.stream.clone();
            async move { stream_count(&js, &stream).await == 2 }
        },
    )
    .await;
    let after = stream_messages(&js, &names.stream).await;
    assert_eq!(message_id(&after[1]), pending.to_string());
}

/// A `nats-server` of this test's own, with JetStream and a store folder that survives its
/// restarts; killed when dropped.
struct Broker {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store =
            std::env::temp_dir().join(format!("nats-sink-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).unwrap();
        let mut broker = Self {
            port,
            store,
            child: None,
        };
        broker.restart();
        broker
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) at /usr/sbin/nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

async fn lag_seconds(app: &TestApp) -> f64 {
    Scrape::fetch(&app.http, &app.service_metrics_url)
        .await
        .sum("event_sink_lag_seconds", &[])
}

async fn a_broker_outage_delays_forwarding_and_loses_nothing(kind: Db) {
    let mut broker = Broker::start();
    let names = Names::unique();
    let env = names.env(&broker.url());
    let Some(app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    let integration = github_integration(&app, 4103).await;
    let mut ids = Vec::new();
    let deliver_some = |from: usize, to: usize| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for i in from..to {
                let (status, id) = deliver(app, integration, "push", &format!("steady-{i}")).await;
                assert_eq!(status, StatusCode::OK, "delivery {i} answered 2xx");
                out.push(id.unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        }
    };
    ids.extend(deliver_some(0, 10).await);
    {
        let js = jetstream_at(&broker.url()).await;
        eventually(Duration::from_secs(20), "the first ten forwarded", || {
            let js = js.clone();
            let stream = names.stream.clone();
            let app = &app;
            async move { stream_count(&js, &stream).await == 10 && unforwarded(app).await == 0 }
        })
        .await;
    }

    broker.stop();
    let outage = Instant::now();
    // A steady stream while the broker is down: every delivery is still stored and 2xx.
    ids.extend(deliver_some(10, 40).await);
    eventually(Duration::from_secs(20), "the lag metric rises", || {
        let app = &app;
        async move { lag_seconds(app).await >= 1.5 }
    })
    .await;
    assert_eq!(
        unforwarded(&app).await,
        30,
        "the outage's events wait in the outbox"
    );
    println!("broker down for {:?}", outage.elapsed());

    broker.restart();
    let js = jetstream_at(&broker.url()).await;
    eventually(
        Duration::from_secs(60),
        "everything forwarded after the restart",
        || {
            let app = &app;
            async move { unforwarded(app).await == 0 }
        },
    )
    .await;
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    assert_one_message_per_event(&js, &names.stream, &uuids).await;
    // The backlog drained in order of receipt (one integration, one forwarder).
    let order: Vec<String> = stream_messages(&js, &names.stream)
        .await
        .iter()
        .map(message_id)
        .collect();
    assert_eq!(order, ids);
    eventually(Duration::from_secs(10), "the lag metric back to 0", || {
        let app = &app;
        async move { lag_seconds(app).await == 0.0 }
    })
    .await;
}

/// The service binary with the sink on, on `app`'s database; no gRPC port of interest.
fn service_process(app: &TestApp, names: &Names) -> tokio::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_integration-service"))
        .arg("serve")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", &app.database.url)
        .env("SUPABASE_JWT_SECRET", &app.jwt_secret)
        .env("INTEGRATION_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "off")
        .env("EVENT_SINK_URL", SHARED_BROKER)
        .env("EVENT_SINK_STREAM", &names.stream)
        .env("EVENT_SINK_SUBJECT_PREFIX", &names.prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn a_service_killed_mid_forwarding_leaves_one_message_per_event(kind: Db) {
    // The test app itself does not forward: the child processes do.
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let names = Names::unique();
    let integration = github_integration(&app, 4104).await;
    let ids = store_events(&app, integration, 6000).await;
    let total = ids.len() as i64;

    // SIGKILL the forwarding process in the middle of the backlog, while it holds the lease
    // (between rounds or inside one: published, partly acknowledged or not yet sent).
    let before = unforwarded(&app).await;
    let mut process = service_process(&app, &names);
    eventually(
        Duration::from_secs(60),
        "the process forwards, holding the lease",
        || {
            let (app, stream) = (&app, &names.stream);
            async move {
                unforwarded(app).await < before && lease_holder(app, stream).await.is_some()
            }
        },
    )
    .await;
    process.start_kill().unwrap();
    process.wait().await.unwrap();
    let left = unforwarded(&app).await;
    let holder = lease_holder(&app, &names.stream).await;
    println!(
        "SIGKILL: {left} of {total} events not yet marked forwarded, lease left to {holder:?}"
    );
    assert!(left > 0, "killed before the end of the backlog");
    assert!(holder.is_some(), "the killed process's lease still runs");

    let mut second = service_process(&app, &names);
    eventually(
        Duration::from_secs(90),
        "the restarted process forwards the rest",
        || {
            let app = &app;
            async move { unforwarded(app).await == 0 }
        },
    )
    .await;
    assert_ne!(
        lease_holder(&app, &names.stream).await,
        holder,
        "the restarted process took the lease over once the killed one's ran out"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    let js = jetstream_at(SHARED_BROKER).await;
    assert_one_message_per_event(&js, &names.stream, &ids).await;
}

async fn two_replicas_forwarding_at_once_leave_one_message_per_event(kind: Db) {
    let names = Names::unique();
    let env = names.env(SHARED_BROKER);
    let Some(mut app) = spawn_app_with(kind, &borrowed(&env)).await else {
        return;
    };
    app.spawn_service_replica_with(&borrowed(&env)).await;
    let integration = github_integration(&app, 4105).await;
    let ids = store_events(&app, integration, 3000).await;
    eventually(
        Duration::from_secs(90),
        "both replicas forward the backlog",
        || {
            let app = &app;
            async move { unforwarded(app).await == 0 }
        },
    )
    .await;
    let js = jetstream_at(SHARED_BROKER).await;
    assert_one_message_per_event(&js, &names.stream, &ids).await;
    let scrape = Scrape::fetch(&app.http, &app.service_metrics_url).await;
    println!(
        "this replica published {} (duplicates {})",
        scrape.sum("event_sink_forwarded_total", &[("outcome", "published")]),
        scrape.sum("event_sink_forwarded_total", &[("outcome", "duplicate")])
    );
}

async fn retention_keeps_unforwarded_events_while_the_sink_is_on(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let integration = github_integration(&app, 4106).await;
    let ids = store_events(&app, integration, 4).await;
    // All four processed and 40 days old; two of them forwarded.
    for id in &ids {
        assert!(webhook_events::mark_processed(&app.db, *id, Utc::now())
            .await
            .unwrap());
    }
    let old = Utc::now() - chrono::Duration::days(40);
    app.db
        .execute_raw(Statement::from_sql_and_values(
            app.db.get_database_backend(),
            match app.db.get_database_backend() {
                sea_orm::DbBackend::Postgres => "UPDATE webhook_events SET received_at = $1",
                _ => "UPDATE webhook_events SET received_at = ?",
            },
            [old.into()],
        ))
        .await
        .unwrap();
    assert_eq!(
        event_outbox::mark_forwarded(&app.db, &ids[..2])
            .await
            .unwrap(),
        2
    );
    let thirty_days = Duration::from_secs(30 * 24 * 3600);

    let purged = retention::purge(&app.db, thirty_days, 10, true)
        .await
        .unwrap();
    assert_eq!(
        purged, 2,
        "only the forwarded events go while the sink is on"
    );
    for id in &ids[2..] {
        assert!(webhook_events::find(&app.db, *id).await.unwrap().is_some());
    }
    // The sink off: finished events go whether forwarded or not.
    assert_eq!(
        retention::purge(&app.db, thirty_days, 10, false)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        webhook_events::count_for_integration(&app.db, integration)
            .await
            .unwrap(),
        0
    );
    // Their outbox rows went with them: nothing waits for events that are gone.
    assert_eq!(unforwarded(&app).await, 0);
    assert_eq!(
        event_outbox::oldest_unforwarded(&app.db).await.unwrap(),
        None
    );
}

async fn one_replica_at_a_time_holds_the_forwarding_lease(kind: Db) {
    let Some(app) = spawn_app_with(kind, &[]).await else {
        return;
    };
    let db = &app.db;
    let now = Utc::now();
    let until = now + chrono::Duration::seconds(10);
    let take = |owner: &'static str, at: chrono::DateTime<Utc>| async move {
        event_outbox::take_lease(
            db,
            "LEASE_TEST",
            owner,
            at,
            at + chrono::Duration::seconds(10),
        )
        .await
        .unwrap()
    };
    assert!(take("a", now).await, "a free lease is taken");
    assert!(!take("b", now).await, "another's running lease is refused");
    assert!(take("a", now).await, "the holder renews it");
    assert!(
        event_outbox::take_lease(db, "OTHER_STREAM", "b", now, until)
            .await
            .unwrap(),
        "each stream has a lease of its own"
    );
    let later = now + chrono::Duration::seconds(11);
    assert!(take("b", later).await, "a lease that ran out is taken over");
    assert!(!take("a", later).await, "the former holder now stands by");
    assert_eq!(
        event_outbox::release_lease(db, "LEASE_TEST", "a")
            .await
            .unwrap(),
        0,
        "only the holder gives the lease up"
    );
    assert_eq!(
        event_outbox::release_lease(db, "LEASE_TEST", "b")
            .await
            .unwrap(),
        1
    );
    assert!(take("a", later).await, "a lease given up is free at once");
}
