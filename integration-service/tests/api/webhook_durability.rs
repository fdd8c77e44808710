//! A delivery answered 2xx survives the service being killed (SIGKILL) right after the answer:
//! the real `integration-service` binary runs as a child process, is killed with no chance to
//! flush anything, and the events are in the database — and recognised — after a restart.

use std::{process::Stdio, time::Duration};

use futures::future::join_all;
use integration_service::{
    config::EncryptionKey,
    crypto::{Keyring, SecretColumn},
    store::{self, entities::integration, entities::webhook_event},
    webhooks::signature::github_signature,
};
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, Header, ReceiveWebhookRequest,
};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
use test_support::{Db, TestDatabase, TEST_ENCRYPTION_KEY};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

const SECRET: &str = "durability-secret";

struct Service {
    child: Child,
    url: String,
    cwd: std::path::PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.cwd);
    }
}

/// Starts the service binary on a free port and waits until it accepts gRPC connections.
async fn start_service(database_url: &str) -> Service {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // An empty working directory: no `.env` of the developer's is picked up.
    let cwd = std::env::temp_dir().join(format!("durability-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&cwd).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_integration-service"))
        .arg("serve")
        .current_dir(&cwd)
        .env("DATABASE_URL", database_url)
        .env("INTEGRATION_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        .env("SUPABASE_JWT_SECRET", "durability-jwt-secret")
        // Tests run side by side: no process may take the default metrics port.
        .env("METRICS_ADDR", "off")
        .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn integration-service");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if WebhookServiceClient::connect(url.clone()).await.is_ok() {
            return Service { child, url, cwd };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("integration-service did not start on {url}");
}

async fn github_integration(database_url: &str) -> Uuid {
    let db = store::connect(database_url).await.unwrap();
    store::organizations::ensure_membership(&db, 1, Uuid::new_v4(), "OWNER")
        .await
        .unwrap();
    let record = store::integrations::get_or_create(&db, 1, "github")
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
    active.webhook_secret = Set(Some(secret));
    active.update(&db).await.unwrap();
    let _ = db.close().await;
    id
}

async fn deliver(
    mut client: WebhookServiceClient<Channel>,
    integration: Uuid,
    delivery: String,
) -> String {
    let body = format!(r#"{{"ref":"refs/heads/main","delivery":"{delivery}"}}"#).into_bytes();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", delivery),
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
        .expect("delivery accepted")
        .into_inner();
    assert_eq!(answer.http_status, 200);
    answer.event_id.expect("event id")
}

async fn acknowledged_events_survive_sigkill(kind: Db) {
    let Some(database) = TestDatabase::create(kind).await else {
        return;
    };
    let mut service = start_service(&database.url).await;
    let integration = github_integration(&database.url).await;
    let client = WebhookServiceClient::connect(service.url.clone())
        .await
        .unwrap();
    let deliveries: Vec<String> = (0..20).map(|n| format!("kill-{n}")).collect();
    let acknowledged = join_all(
        deliveries
            .iter()
            .map(|d| deliver(client.clone(), integration, d.clone())),
    )
    .await;
    // Killed the moment the last 2xx arrived: no graceful shutdown, no flush.
    service.child.start_kill().unwrap();
    service.child.wait().await.unwrap();

    let db = store::connect(&database.url).await.unwrap();
    for (delivery, event_id) in deliveries.iter().zip(&acknowledged) {
        let event = webhook_event::Entity::find_by_id(Uuid::parse_str(event_id).unwrap())
            .one(&db)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged event {event_id} lost"));
        assert_eq!(event.delivery_id.as_deref(), Some(delivery.as_str()));
        assert_eq!(event.status.as_str(), "PENDING");
    }
    let _ = db.close().await;

    // After a restart, GitHub's redelivery of an acknowledged event is recognised.
    let service = start_service(&database.url).await;
    let client = WebhookServiceClient::connect(service.url.clone())
        .await
        .unwrap();
    let again = deliver(client, integration, deliveries[0].clone()).await;
    assert_eq!(again, acknowledged[0]);
    drop(service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_sqlite() {
    acknowledged_events_survive_sigkill(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_postgres() {
    acknowledged_events_survive_sigkill(Db::Postgres).await;
}
