//! The Rust client example (`examples/grpc_client.rs`) run against a live service on both
//! databases: it gets the integration's token and consumes and acknowledges the delivery the
//! gateway just stored. (The Python client is checked by `.ci/python-client.sh`.)

use integration_service::{
    crypto::Keyring, store::entities::webhook_event, webhooks::signature::github_signature,
};
use reqwest::{header, StatusCode};
use sea_orm::EntityTrait;
use serde_json::Value;
use test_support::{dual_test, seed, TestApp, TEST_ENCRYPTION_KEY};

#[path = "../../examples/grpc_client.rs"]
#[allow(dead_code)]
mod grpc_client;

dual_test!(rust_example_gets_a_token_and_acknowledges_a_delivery);

async fn rust_example_gets_a_token_and_acknowledges_a_delivery(app: TestApp) {
    let key = hex::decode(TEST_ENCRYPTION_KEY)
        .unwrap()
        .try_into()
        .unwrap();
    let keyring = Keyring::new(&integration_service::config::EncryptionKey(key), &[]);
    let seeded = seed::connected_integration(&app.db, &keyring, 12, "github", "gho_example")
        .await
        .unwrap();
    let body = r#"{"ref":"refs/heads/main"}"#;
    let delivered = app
        .http
        .post(app.url(&format!(
            "/api/integrations/github/webhook/{}",
            seeded.integration_id
        )))
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "9a0b1c2d-0000-4000-8000-0000000000e1")
        .header(
            "X-Hub-Signature-256",
            github_signature(seeded.webhook_secret.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), StatusCode::OK);
    let event_id = delivered.json::<Value>().await.unwrap()["eventId"]
        .as_str()
        .unwrap()
        .to_string();

    let handled = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        grpc_client::run(&grpc_client::ClientConfig {
            service_url: app.grpc_url.clone(),
            service_role_jwt: app.service_token(),
            organization_id: 12,
            integration: "github".into(),
            max_events: Some(1),
        }),
    )
    .await
    .expect("the example finishes")
    .expect("the example succeeds");

    assert_eq!(handled.access_token_len, "gho_example".len());
    let ids: Vec<&str> = handled.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [event_id.as_str()]);
    assert_eq!(handled.events[0].event_type, "push");
    let stored = webhook_event::Entity::find_by_id(event_id.parse::<uuid::Uuid>().unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status.as_str(), "PROCESSED", "acknowledged");
}
