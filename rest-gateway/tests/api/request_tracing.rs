//! Following a request: every gateway response carries `x-request-id` (the caller's when it
//! is a sane token, else a new UUID), and the id travels to the service, whose span of the RPC
//! carries it with the method and the organization — one id across both servers' logs.

use reqwest::StatusCode;
use test_support::{
    dual_test,
    logs::{capture_logs, lines_containing},
    TestApp,
};
use uuid::Uuid;

dual_test!(
    a_refused_delivery_is_logged_by_the_service_with_its_request_id,
    every_response_carries_a_request_id,
    one_request_id_is_followed_across_gateway_and_service,
);

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("x-request-id on every response")
        .to_str()
        .unwrap()
        .to_string()
}

async fn every_response_carries_a_request_id(app: TestApp) {
    for path in ["/health", "/no/such/route", "/api/integrations"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        Uuid::parse_str(&request_id(&response)).expect("a new UUID when none was given");
    }
    let response = app
        .http
        .get(app.url("/no/such/route"))
        .header("x-request-id", "client-req_42.a:b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(request_id(&response), "client-req_42.a:b");
    // A value that could forge log fields, or is too long, is replaced.
    for hostile in ["a b \"x\"=1", &"x".repeat(200)] {
        let response = app
            .http
            .get(app.url("/health"))
            .header("x-request-id", hostile)
            .send()
            .await
            .unwrap();
        let id = request_id(&response);
        assert_ne!(id, hostile);
        Uuid::parse_str(&id).unwrap();
    }
}

async fn one_request_id_is_followed_across_gateway_and_service(app: TestApp) {
    capture_logs();
    let (_, owner) = app.owner(7).await;
    let id = format!("follow-{}", Uuid::new_v4().simple());
    let response = app
        .http
        .get(app.url("/api/integrations"))
        .bearer_auth(&owner)
        .header("x-request-id", &id)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(request_id(&response), id);

    let lines = lines_containing(&id);
    let gateway = lines
        .iter()
        .find(|line| line["message"] == "request")
        .unwrap_or_else(|| panic!("no gateway access line for {id}: {lines:#?}"));
    assert_eq!(gateway["span"]["request_id"], id.as_str());
    assert_eq!(gateway["status"], 200);
    let service = lines
        .iter()
        .find(|line| line["span"]["name"] == "rpc")
        .unwrap_or_else(|| panic!("no service line for {id}: {lines:#?}"));
    assert_eq!(
        service["span"]["method"],
        "/integrations.v1.IntegrationService/ListIntegrations"
    );
    assert_eq!(service["span"]["request_id"], id.as_str());
    assert_eq!(service["span"]["organization_id"], 7);
    // No credential reaches a log line.
    for line in &lines {
        assert!(!line.to_string().contains(&owner), "token logged: {line}");
    }
}

/// A refused delivery (a forged signature) can be followed by its request id in the service's
/// log too, with the reason: an operator chasing a provider's complaint about 401s finds it.
async fn a_refused_delivery_is_logged_by_the_service_with_its_request_id(app: TestApp) {
    capture_logs();
    app.owner(3).await;
    let integration = integration_service::store::integrations::get_or_create(&app.db, 3, "github")
        .await
        .unwrap()
        .id;
    let id = format!("refused-{}", Uuid::new_v4().simple());
    let response = app
        .http
        .post(app.url(&format!("/api/integrations/github/webhook/{integration}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-forged")
        .header("x-hub-signature-256", "sha256=00")
        .header("x-request-id", &id)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&response), id);
    assert!(response.status().is_client_error());
    let lines = lines_containing(&id);
    let refused = lines
        .iter()
        .find(|line| line["span"]["name"] == "rpc" && line["message"] == "rpc refused")
        .unwrap_or_else(|| panic!("no service refusal line for {id}: {lines:#?}"));
    assert_eq!(
        refused["span"]["method"],
        "/integrations.v1.WebhookService/ReceiveWebhook"
    );
    assert!(refused["error"].is_string(), "{refused}");
}
