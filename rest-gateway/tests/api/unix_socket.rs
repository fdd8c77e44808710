//! The gateway and the service on one host, over the service's Unix domain socket
//! (`GRPC_UNIX_SOCKET`, `INTEGRATION_SERVICE_URL=unix:///...`): the routes answer as over
//! TCP — a read, a signed delivery stored, the event read back — and the service still
//! answers on its TCP address. On SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::Value;
use test_support::{dual_db_test, spawn_app_with, Db};
use uuid::Uuid;

use crate::console::{deliver, github_integration};

dual_db_test!(the_gateway_reaches_the_service_over_its_unix_socket);

async fn the_gateway_reaches_the_service_over_its_unix_socket(kind: Db) {
    let dir = std::env::temp_dir().join(format!("uds-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("service.sock");
    let url = format!("unix://{}", socket.display());
    let socket_text = socket.display().to_string();
    let Some(app) = spawn_app_with(
        kind,
        &[
            ("GRPC_UNIX_SOCKET", &socket_text),
            ("INTEGRATION_SERVICE_URL", &url),
        ],
    )
    .await
    else {
        return;
    };
    let (_, token) = app.owner(1).await;
    let list = app.get_as(&token, "/api/integrations").await;
    assert_eq!(list.status(), StatusCode::OK);
    assert!(
        std::fs::symlink_metadata(&socket).is_ok(),
        "the socket exists"
    );

    let integration = github_integration(&app, 1).await;
    let event = deliver(
        &app,
        integration,
        "push",
        br#"{"ref":"refs/heads/main"}"#,
        &[],
    )
    .await;
    let read = app
        .get_as(
            &token,
            &format!("/api/integrations/{integration}/events/{event}"),
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["data"]["id"], event.as_str(), "{body}");

    // TCP still serves beside the socket.
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING over TCP");
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
}
