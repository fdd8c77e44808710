//! A rotated webhook secret reaches the webhooks the service set up (route 15), on both
//! databases: GitHub's hook is updated in place with the new secret, a Graph subscription
//! (whose `clientState` cannot change) is replaced by one with the new secret and the old one
//! deleted — both long before the old secret's grace ends, and deliveries signed with the new
//! secret verify.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use test_support::{dual_db_test, fake_provider::FakeProvider, Db};

use crate::subscriptions::{github_connected_with, standard_connected, Github};

dual_db_test!(
    a_rotated_secret_updates_the_github_hook_in_place,
    a_rotated_secret_replaces_the_graph_subscription,
);

const FAST_RENEWER: &[(&str, &str)] = &[("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1")];

/// Rotates the integration's secret: the new one.
async fn rotate(connected: &Github, provider: &str) -> String {
    let response = connected
        .app
        .http
        .post(
            connected
                .app
                .url(&format!("/api/integrations/{provider}/webhook/rotate")),
        )
        .bearer_auth(&connected.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["data"]["secret"].as_str().unwrap().to_string()
}

/// Polls `done` every 100 ms for at most `within`.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

async fn a_rotated_secret_updates_the_github_hook_in_place(kind: Db) {
    let Some(gh) = github_connected_with(kind, |_: &FakeProvider| {}, FAST_RENEWER).await else {
        return;
    };
    let (status, created) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let before = gh.fake.api.hooks().remove(0);
    let secret = rotate(&gh, "github").await;
    assert_ne!(before.secret, secret);
    assert!(
        eventually(Duration::from_secs(8), || gh
            .fake
            .api
            .hooks()
            .iter()
            .any(|h| h.secret == secret))
        .await,
        "the hook carries the new secret"
    );
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1, "updated in place, not a second hook");
    assert_eq!(hooks[0].id, before.id);
    assert_eq!(hooks[0].url, before.url);
    let response = hooks[0]
        .deliver_github(
            &gh.app.http,
            "push",
            "rotated-1",
            &json!({"ref": "refs/heads/main"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = gh.list_of("github").await;
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_eq!(listed[0]["id"], created["data"]["id"]);
    // Nothing further happens at the next checks: the webhook is up to date.
    let calls = gh.fake.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patches = gh
        .fake
        .requests()
        .into_iter()
        .skip(calls)
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patches, 0);
}

async fn a_rotated_secret_replaces_the_graph_subscription(kind: Db) {
    let Some(ms) = standard_connected(kind, "microsoft", |_| {}, FAST_RENEWER).await else {
        return;
    };
    let (status, created) = ms
        .create(
            "microsoft",
            json!({"resource": "me/mailFolders('Inbox')/messages"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let before = ms.fake.api.graph_subscriptions().remove(0);
    let secret = rotate(&ms, "microsoft").await;
    assert!(
        eventually(Duration::from_secs(8), || {
            let now = ms.fake.api.graph_subscriptions();
            now.len() == 1 && now[0].client_state == secret
        })
        .await,
        "one Graph subscription, with the new clientState: {:?}",
        ms.fake.api.graph_subscriptions()
    );
    let after = ms.fake.api.graph_subscriptions().remove(0);
    assert_ne!(
        after.id, before.id,
        "a new subscription replaced the old one"
    );
    assert_eq!(after.resource, before.resource);
    assert_eq!(after.notification_url, before.notification_url);
    let listed = ms.list_of("microsoft").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_eq!(listed[0]["provider_subscription_id"], after.id);
}
