//! The real `integration-service` binary, as a newcomer runs it: zero configuration on SQLite,
//! `dev-token`, and refusals to start with a missing or malformed key.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// A command with none of the developer's environment but PATH, run in `dir`.
fn service(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "integration-binary-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not listen on {port}");
}

#[tokio::test]
async fn zero_config_serve_dev_token_and_gateway() {
    let dir = temp_dir();
    let port = free_port();
    let metrics_port = free_port();
    let _service = Running(
        service(&dir)
            .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port).await;
    for secret in ["dev-encryption.key", "dev-jwt.secret"] {
        let metadata = std::fs::metadata(dir.join("data").join(secret)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{secret}");
    }
    assert!(dir.join("data/integrations.db").exists());

    // Quiet apart from the token, whatever RUST_LOG says (no migration or startup lines).
    let output: Output = service(&dir)
        .env("RUST_LOG", "info")
        .args([
            "dev-token",
            "--org",
            "3",
            "--user",
            "7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60",
            "--role",
            "ADMIN",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout, nothing else");
    assert!(
        output.stderr.is_empty(),
        "nothing on stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    let config = rest_gateway_config(port);
    tokio::spawn(rest_gateway::server::serve(
        rest_gateway::Gateway::new(config).unwrap(),
        listener,
        std::future::pending(),
    ));
    let response = reqwest::Client::new()
        .get(format!("{http}/api/integrations"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"][0]["organization_id"], 3);
    assert_eq!(body["data"][0]["id"], "github");

    // The binary serves its metrics on METRICS_ADDR: the call above is counted.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "grpc_server_handled_total{grpc_service=\"integrations.v1.IntegrationService\",grpc_method=\"ListIntegrations\",grpc_code=\"OK\"} 1"
        ),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn rest_gateway_config(port: u16) -> rest_gateway::config::GatewayConfig {
    rest_gateway::config::GatewayConfig::from_lookup(|name| {
        (name == "INTEGRATION_SERVICE_URL").then(|| format!("http://127.0.0.1:{port}"))
    })
    .unwrap()
}

#[test]
fn refuses_to_start_without_a_key_on_postgres_or_in_production() {
    let dir = temp_dir();
    let output = service(&dir)
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INTEGRATION_ENCRYPTION_KEY is required"),
        "{stderr}"
    );

    let output = service(&dir)
        .env("APP_ENV", "production")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("INTEGRATION_ENCRYPTION_KEY is required")
    );
    assert!(
        !dir.join("data").exists(),
        "no development secret was generated"
    );

    let output = service(&dir)
        .env("INTEGRATION_ENCRYPTION_KEY", "not-hex")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INTEGRATION_ENCRYPTION_KEY is invalid: expected 64 hex characters"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-hex"), "the bad value is not echoed");
    let _ = std::fs::remove_dir_all(dir);
}

/// `dev-token` is a development helper: under `APP_ENV=production` it writes nothing into the
/// main application's membership table and mints no session; its lifetime is bounded; and
/// `--service-role` makes an internal caller's token that the service accepts.
#[tokio::test]
async fn dev_token_refuses_production_and_unbounded_lifetimes() {
    let dir = temp_dir();
    let key = "3f".repeat(32);
    let secret = "production-jwt-secret-of-some-length";
    let db = dir.join("prod.db");
    let output = service(&dir)
        .env("APP_ENV", "production")
        .env("INTEGRATION_ENCRYPTION_KEY", &key)
        .env("SUPABASE_JWT_SECRET", secret)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .args([
            "dev-token",
            "--org",
            "1",
            "--user",
            "7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "no token printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused under APP_ENV=production"),
        "{stderr}"
    );
    assert!(!db.exists(), "nothing written, not even the database");

    // The sandbox hands out tokens to anyone: production refuses every one of its commands.
    for command in [
        &["sandbox", "serve", "--addr", "127.0.0.1:0"][..],
        &["sandbox", "env"],
        &[
            "sandbox",
            "deliver",
            "github",
            "--url",
            "http://127.0.0.1:1/",
            "--secret",
            "s",
        ],
    ] {
        let output = service(&dir)
            .env("APP_ENV", "production")
            .env("INTEGRATION_ENCRYPTION_KEY", &key)
            .env("SUPABASE_JWT_SECRET", secret)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}?mode=rwc", db.display()),
            )
            .args(command)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command:?}");
        assert!(output.stdout.is_empty(), "{command:?}: nothing printed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("the sandbox is for development: refused under APP_ENV=production"),
            "{command:?}: {stderr}"
        );
    }

    let output = service(&dir)
        .args([
            "dev-token",
            "--org",
            "1",
            "--user",
            "7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60",
            "--ttl-hours",
            "100000",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ttl-hours must be from 1 to 720"));

    // An internal caller's token, accepted by the service as service_role.
    let port = free_port();
    let _service = Running(
        service(&dir)
            .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port).await;
    let made = service(&dir)
        .args([
            "dev-token",
            "--org",
            "5",
            "--user",
            "7f1c2a9e-3b4d-4c5e-8f6a-1b2c3d4e5f60",
        ])
        .output()
        .unwrap();
    assert!(made.status.success());
    let output = service(&dir)
        .args(["dev-token", "--service-role"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let mut client =
        integrations_proto::v1::integration_service_client::IntegrationServiceClient::connect(
            format!("http://127.0.0.1:{port}"),
        )
        .await
        .unwrap();
    let mut request =
        tonic::Request::new(integrations_proto::v1::ListIntegrationsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
        .metadata_mut()
        .insert("x-organization-id", "5".parse().unwrap());
    let listed = client.list_integrations(request).await;
    assert!(listed.is_ok(), "{listed:?}");
    let _ = std::fs::remove_dir_all(dir);
}
