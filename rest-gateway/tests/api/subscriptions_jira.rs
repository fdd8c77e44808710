//! Jira dynamic webhooks (route 15, provider `atlassian`) over real sockets on both databases:
//! registered at the fake Jira through its REST API with a JQL filter, verified on delivery by
//! the app's JWT and the webhook ids the body names (stored once, consumed over
//! `SubscribeEvents`), refreshed before they expire, registered again when deleted behind our
//! back, deleted with the subscription and at disconnect.

use std::time::Duration;

use integration_service::store::entities::webhook_event;
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, SubscribeEventsRequest,
};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{json, Value};
use test_support::{dual_db_test, fake_provider::FakeProvider, scrape::Scrape, Db};

use crate::subscriptions::{standard_connected, Github};

dual_db_test!(
    jira_webhook_registered_once_verified_by_the_app_jwt_and_deleted,
    jira_webhooks_refreshed_before_expiry_and_registered_again_when_gone,
    jira_without_the_webhook_scope_is_a_400_naming_it,
);

const JQL: &str = "project = PROJ AND issuetype = Bug";

async fn jira_connected(
    kind: Db,
    configure: impl FnOnce(&FakeProvider),
    extra: &[(&str, &str)],
) -> Option<Github> {
    standard_connected(kind, "atlassian", configure, extra).await
}

async fn stored_events(jira: &Github) -> u64 {
    webhook_event::Entity::find()
        .count(&jira.app.db)
        .await
        .unwrap()
}

async fn jira_webhook_registered_once_verified_by_the_app_jwt_and_deleted(kind: Db) {
    let Some(jira) = jira_connected(kind, |_| {}, &[]).await else {
        return;
    };
    let (status, created) = jira
        .create(
            "atlassian",
            json!({"resource": JQL, "events": ["jira:issue_created", "jira:issue_updated"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let data = &created["data"];
    assert_eq!(data["state"], "ACTIVE");
    let webhooks = jira.fake.api.jira.webhooks();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook.jql, JQL);
    assert_eq!(webhook.events, ["jira:issue_created", "jira:issue_updated"]);
    assert_eq!(
        data["provider_subscription_id"],
        format!("{}/{}", test_support::fake_jira::FAKE_CLOUD_ID, webhook.id)
    );
    // The expiry kept is the one Jira answered to the refresh right after the registration.
    let expires: chrono::DateTime<chrono::Utc> =
        data["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.timestamp(), webhook.expires_at.timestamp());
    assert!(expires > chrono::Utc::now() + chrono::Duration::days(29));
    assert_eq!(jira.fake.api.jira.refreshes().len(), 1);
    let settings: Value = jira
        .app
        .get_as(&jira.token, "/api/integrations/atlassian/webhook")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(webhook.url, settings["data"]["url"].as_str().unwrap());

    // A delivery as Jira sends it verifies, once; its retry is the same event.
    let issue = json!({"issue": {"id": "10002", "key": "PROJ-2"}});
    let first = webhook
        .deliver(&jira.app.http, "jira:issue_created", "wh-1", &issue, None)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let again: Value = webhook
        .deliver(&jira.app.http, "jira:issue_created", "wh-1", &issue, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["eventId"], again["eventId"], "{first}");
    assert_eq!(stored_events(&jira).await, 1);
    // ... and reaches a consumer of the gRPC stream.
    let mut client = WebhookServiceClient::connect(jira.app.grpc_url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SubscribeEventsRequest {
        provider: Some("atlassian".into()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", jira.app.service_token())
            .parse()
            .unwrap(),
    );
    let mut stream = client.subscribe_events(request).await.unwrap().into_inner();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("stream open");
    assert_eq!(event.id, first["eventId"].as_str().unwrap());
    assert_eq!(event.event_type, "jira:issue_created");
    drop(stream);

    // Hostile: a JWT under another secret, a body naming another webhook, no credential at
    // all — each a 401, nothing stored.
    let forged = webhook
        .deliver(
            &jira.app.http,
            "jira:issue_created",
            "wh-2",
            &issue,
            Some("not-the-app-secret"),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let mut elsewhere = webhook.clone();
    elsewhere.id += 1;
    let response = elsewhere
        .deliver(&jira.app.http, "jira:issue_created", "wh-3", &issue, None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("matchedWebhookIds"),
        "{body}"
    );
    let unsigned = jira
        .app
        .http
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("x-atlassian-webhook-identifier", "wh-4")
        .body(
            json!({"webhookEvent": "jira:issue_created", "matchedWebhookIds": [webhook.id]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(stored_events(&jira).await, 1);

    // Creating again: the same subscription, one webhook. A filter Jira refuses: a 502 with
    // Jira's reason, nothing registered, nothing stored.
    let (status, again) = jira.create("atlassian", json!({"resource": JQL})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["id"], data["id"]);
    assert_eq!(jira.fake.api.jira.webhooks().len(), 1);
    let (status, refused) = jira
        .create("atlassian", json!({"resource": "project = INVALID ("}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{refused}");
    assert!(
        refused["details"]
            .as_str()
            .unwrap()
            .contains("The JQL query is invalid"),
        "{refused}"
    );
    assert_eq!(jira.fake.api.jira.webhooks().len(), 1);
    assert_eq!(jira.list_of("atlassian").await.len(), 1);
    let (status, body) = jira
        .create("atlassian", json!({"resource": JQL, "events": ["push"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Deleted: none left at Jira. A second one goes at disconnect.
    let (status, deleted) = jira
        .delete_of("atlassian", data["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["data"]["state"], "DELETED");
    assert!(jira.fake.api.jira.webhooks().is_empty());
    let (status, _) = jira
        .create("atlassian", json!({"resource": "project = OPS"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jira.fake.api.jira.webhooks().len(), 1);
    let response = jira
        .app
        .delete_as(&jira.token, "/api/integrations/atlassian")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(jira.fake.api.jira.webhooks().is_empty());
    let listed = jira.list_of("atlassian").await;
    assert!(listed.iter().all(|s| s["state"] == "DELETED"), "{listed:?}");
}

async fn jira_webhooks_refreshed_before_expiry_and_registered_again_when_gone(kind: Db) {
    let lifetime = chrono::Duration::seconds(6);
    let Some(jira) = jira_connected(
        kind,
        |fake| fake.api.jira.set_lifetime(lifetime),
        &[
            ("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1"),
            ("SUBSCRIPTION_RECONCILE_INTERVAL_SECS", "600"),
        ],
    )
    .await
    else {
        return;
    };
    let (status, created) = jira.create("atlassian", json!({"resource": JQL})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let first = jira.fake.api.jira.webhooks().remove(0);

    // Three lifetimes later the webhook still lives: each refresh came with at least a quarter
    // of the lifetime left, never two for one expiry.
    tokio::time::sleep(Duration::from_secs(18)).await;
    let webhooks = jira.fake.api.jira.webhooks();
    assert_eq!(webhooks.len(), 1, "still registered");
    assert_eq!(webhooks[0].id, first.id);
    let refreshes = jira.fake.api.jira.refreshes();
    assert!(refreshes.len() >= 4, "{refreshes:?}");
    for refresh in &refreshes[1..] {
        let left = refresh.previous_expiry - refresh.at;
        assert!(
            left >= lifetime / 4 - chrono::Duration::milliseconds(500),
            "refreshed with {left} left: {refreshes:?}"
        );
    }
    let mut expiries: Vec<_> = refreshes.iter().map(|r| r.previous_expiry).collect();
    let all = expiries.len();
    expiries.dedup();
    assert_eq!(expiries.len(), all, "one refresh per expiry");
    let listed = jira.list_of("atlassian").await;
    assert_eq!(listed[0]["state"], "ACTIVE");

    // Deleted behind our back: registered again at the next check (a refresh is due within
    // 75 % of the lifetime anyway, and a check looks the webhook up before refreshing it).
    jira.fake.api.jira.remove(first.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while jira.fake.api.jira.webhooks().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let webhooks = jira.fake.api.jira.webhooks();
    assert_eq!(webhooks.len(), 1, "registered again");
    assert_ne!(webhooks[0].id, first.id);
    assert_eq!(webhooks[0].url, first.url);
    let scrape = Scrape::fetch(&jira.app.http, &jira.app.service_metrics_url).await;
    assert_eq!(
        scrape.sum(
            "webhook_subscription_renewals_total",
            &[("provider", "atlassian"), ("outcome", "repaired")],
        ),
        1.0
    );
    assert!(
        scrape.sum(
            "webhook_subscription_renewals_total",
            &[("provider", "atlassian"), ("outcome", "renewed")],
        ) >= 3.0
    );
}

async fn jira_without_the_webhook_scope_is_a_400_naming_it(kind: Db) {
    let Some(jira) = jira_connected(
        kind,
        |fake| fake.grant_scopes("read:jira-work read:jira-user offline_access"),
        &[],
    )
    .await
    else {
        return;
    };
    let (status, body) = jira.create("atlassian", json!({"resource": JQL})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["details"]
            .as_str()
            .unwrap()
            .contains("manage:jira-webhook"),
        "{body}"
    );
    assert!(jira.fake.api.jira.webhooks().is_empty());
    assert!(jira.list_of("atlassian").await.is_empty());
}
