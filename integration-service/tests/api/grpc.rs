//! The gRPC surface as an internal caller sees it with no .proto file at hand: reflection,
//! health, and the same integrations the REST gateway shows.

use serde_json::json;
use test_support::{dual_test, reflection::ReflectionClient, TestApp};

dual_test!(
    reflection_exposes_the_services_and_health,
    list_through_grpc_matches_the_rest_list,
    grpc_errors_carry_code_and_details,
);

async fn reflection_exposes_the_services_and_health(app: TestApp) {
    let client = ReflectionClient::connect(&app.grpc_url).await.unwrap();
    let services = client.services();
    for name in [
        "integrations.v1.IntegrationService",
        "integrations.v1.OAuthService",
        "integrations.v1.WebhookService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == name),
            "{name} missing from {services:?}"
        );
    }
    let health = client
        .call(
            "grpc.health.v1.Health/Check",
            json!({"service": "integrations.v1.IntegrationService"}),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "SERVING"}));
}

async fn list_through_grpc_matches_the_rest_list(app: TestApp) {
    let (_, token) = app.owner(4).await;
    let bearer = format!("Bearer {token}");
    let patched = app
        .patch_json_as(
            &token,
            "/api/integrations/github",
            &json!({"config": {"team": "core"}, "syncFrequency": 600}),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let rest: serde_json::Value = app
        .get_as(&token, "/api/integrations")
        .await
        .json()
        .await
        .unwrap();

    let client = ReflectionClient::connect(&app.grpc_url).await.unwrap();
    let grpc = client
        .call(
            "integrations.v1.IntegrationService/ListIntegrations",
            json!({}),
            &[("authorization", &bearer)],
        )
        .await
        .unwrap();
    let items = grpc["integrations"].as_array().unwrap();
    assert_eq!(items.len(), rest["data"].as_array().unwrap().len());
    for (g, r) in items.iter().zip(rest["data"].as_array().unwrap()) {
        assert_eq!(g["id"], r["id"]);
        assert_eq!(g["provider"], r["provider"]);
        assert_eq!(
            g["organizationId"],
            r["organization_id"].to_string(),
            "int64 is a JSON string in proto3 JSON"
        );
        assert_eq!(
            g.get("connected").cloned().unwrap_or(json!(false)),
            r["connected"]
        );
        let config: serde_json::Value =
            serde_json::from_str(g["configJson"].as_str().unwrap()).unwrap();
        assert_eq!(config, r["config"]);
    }
    assert_eq!(items[0]["syncFrequency"], "600");
    assert_eq!(items[0]["createdAt"], rest["data"][0]["created_at"]);
    assert!(
        items[1].get("createdAt").is_none(),
        "no record, no timestamps"
    );
}

async fn grpc_errors_carry_code_and_details(app: TestApp) {
    let client = ReflectionClient::connect(&app.grpc_url).await.unwrap();
    let unauthenticated = client
        .call(
            "integrations.v1.IntegrationService/ListIntegrations",
            json!({}),
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    assert_eq!(unauthenticated.message(), "Authentication required");

    let service = format!("Bearer {}", app.service_token());
    app.owner(3).await;
    let invalid = client
        .call(
            "integrations.v1.IntegrationService/UpdateIntegration",
            json!({"id": "github", "syncFrequency": "1"}),
            &[("authorization", &service), ("x-organization-id", "3")],
        )
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    use tonic_types::StatusExt;
    let info = invalid.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["details"],
        "syncFrequency: must be between 60 and 2592000 seconds"
    );
}
