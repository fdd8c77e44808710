//! Provider webhook subscriptions (route 15) end to end, on SQLite and PostgreSQL: the real
//! gateway and service, GitHub's OAuth and hooks API served by the fake provider on a real
//! socket. The fake counts the hooks it holds, and a hook delivers through the gateway with
//! the URL and secret the service registered.

use std::time::Duration;

use integration_service::store::entities::webhook_event;
use integrations_proto::v1::{
    webhook_service_client::WebhookServiceClient, SubscribeEventsRequest,
};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, QueryFilter};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{json, Value};
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::connect,
    scrape::Scrape,
    spawn_app_with_env, Db, TestApp, TEST_APP_URL,
};

dual_db_test!(
    github_repo_hook_created_once_verified_and_deleted,
    subscription_service_over_grpc_as_an_internal_caller,
    concurrent_creates_leave_one_hook,
    a_grant_without_the_hook_scope_is_a_400_naming_it,
    hand_set_up_providers_and_bad_input_are_refused,
    a_provider_refusal_is_a_502_and_leaves_nothing,
    disconnect_deletes_every_hook_at_the_provider_first,
    a_provider_outage_does_not_stop_the_disconnect,
    graph_renewed_once_per_lifetime_by_one_of_two_replicas,
    graph_refused_renewals_end_failed_never_a_stale_active,
    graph_lifecycle_notifications_renew_recreate_and_reach_consumers,
    a_hook_deleted_behind_our_back_is_back_within_the_reconciliation_interval,
    a_create_that_crashed_is_taken_over_and_its_leftover_removed,
    google_channel_replaced_before_expiry_and_a_doubly_notified_change_stored_once,
    google_calendar_channels_and_google_resources,
    gitlab_project_hook_created_once_verified_and_deleted,
    bitbucket_repository_hook_created_once_verified_and_deleted,
    linear_webhooks_share_the_secret_linear_issued,
    asana_webhook_created_through_a_handshake_the_service_opened,
    the_console_creates_lists_and_deletes_subscriptions,
);

/// A provider connected by an owner of organization 1 through the fake (`Github` names the
/// first one tested; Microsoft uses the same helpers with its own provider name).
/// A connected integration with its fake provider (every provider's tests use it, not only
/// GitHub's; `subscriptions_jira` too).
pub(crate) struct Github {
    pub(crate) app: TestApp,
    pub(crate) fake: FakeProvider,
    pub(crate) token: String,
}

async fn github_connected(kind: Db, configure: impl FnOnce(&FakeProvider)) -> Option<Github> {
    github_connected_with(kind, configure, &[]).await
}

pub(crate) async fn github_connected_with(
    kind: Db,
    configure: impl FnOnce(&FakeProvider),
    extra: &[(&str, &str)],
) -> Option<Github> {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    configure(&fake);
    let mut vars = fake.env("GITHUB");
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let app = spawn_app_with_env(kind, &vars).await?;
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, "github").await,
        format!("{TEST_APP_URL}/organization/integrations?success=github_connected")
    );
    Some(Github { app, fake, token })
}

impl Github {
    pub(crate) async fn create(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .app
            .http
            .post(
                self.app
                    .url(&format!("/api/integrations/{id}/subscriptions")),
            )
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn list(&self) -> Vec<Value> {
        let response = self
            .app
            .get_as(&self.token, "/api/integrations/github/subscriptions")
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["data"].as_array().unwrap().clone()
    }

    async fn delete(&self, subscription: &str) -> (StatusCode, Value) {
        self.delete_of("github", subscription).await
    }

    pub(crate) async fn delete_of(
        &self,
        provider: &str,
        subscription: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .app
            .delete_as(
                &self.token,
                &format!("/api/integrations/{provider}/subscriptions/{subscription}"),
            )
            .await;
        (response.status(), response.json().await.unwrap())
    }

    async fn webhook_settings(&self) -> (String, String) {
        let settings: Value = self
            .app
            .get_as(&self.token, "/api/integrations/github/webhook")
            .await
            .json()
            .await
            .unwrap();
        (
            settings["data"]["url"].as_str().unwrap().to_string(),
            settings["data"]["secret"].as_str().unwrap().to_string(),
        )
    }

    async fn subscription_calls(&self, outcome: &str) -> f64 {
        Scrape::fetch(&self.app.http, &self.app.service_metrics_url)
            .await
            .sum(
                "provider_requests_total",
                &[
                    ("provider", "github"),
                    ("endpoint", "subscriptions"),
                    ("outcome", outcome),
                ],
            )
    }
}

async fn github_repo_hook_created_once_verified_and_deleted(kind: Db) {
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    let (status, created) = gh
        .create(
            "github",
            json!({"resource": "octo/hello", "events": ["push", "issues"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let item = &created["data"];
    assert_eq!(item["state"], "ACTIVE");
    assert_eq!(item["provider"], "github");
    assert_eq!(item["resource"], "octo/hello");
    assert_eq!(item["events"], json!(["push", "issues"]));
    assert_eq!(item["expires_at"], Value::Null);
    assert_eq!(item["last_error"], Value::Null);
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(item["provider_subscription_id"], hook.id.to_string());
    let (url, secret) = gh.webhook_settings().await;
    assert_eq!(hook.collection, "/repos/octo/hello/hooks");
    assert_eq!(hook.url, url);
    assert_eq!(hook.secret, secret);
    assert_eq!(hook.content_type, "json");
    assert_eq!(hook.insecure_ssl, "0");
    assert_eq!(hook.events, ["push", "issues"]);
    // No secret in the answer.
    assert!(!created.to_string().contains(&secret));

    // The hook delivers with what the service registered: verified, stored once.
    let payload = json!({"ref": "refs/heads/main", "repository": {"full_name": "octo/hello"}});
    let first = hook
        .deliver_github(&gh.app.http, "push", "delivery-1", &payload)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let again: Value = hook
        .deliver_github(&gh.app.http, "push", "delivery-1", &payload)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["eventId"], first["eventId"]);
    assert_eq!(
        webhook_event::Entity::find()
            .count(&gh.app.db)
            .await
            .unwrap(),
        1
    );

    // Creating again answers the same subscription; the provider still holds one hook.
    let (status, again) = gh
        .create("github", json!({"resource": " octo/hello "}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["id"], item["id"]);
    assert_eq!(gh.fake.api.hooks().len(), 1);
    assert_eq!(gh.list().await.len(), 1);

    // Delete: zero hooks at the provider, the row DELETED; deleting again changes nothing.
    let id = item["id"].as_str().unwrap();
    let (status, deleted) = gh.delete(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["data"]["state"], "DELETED");
    assert!(gh.fake.api.hooks().is_empty());
    let (status, twice) = gh.delete(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(twice["data"]["state"], "DELETED");
    let listed = gh.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "DELETED");
    // Two calls reached GitHub's API (create, delete), both counted.
    assert_eq!(gh.subscription_calls("ok").await, 2.0);

    // After a delete, creating again makes a new one.
    let (status, renewed) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(renewed["data"]["id"], item["id"]);
    assert_eq!(renewed["data"]["events"], json!(["push"]));
    assert_eq!(gh.fake.api.hooks().len(), 1);
    assert_eq!(gh.list().await.len(), 2);
}

async fn concurrent_creates_leave_one_hook(kind: Db) {
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    let body = json!({"resource": "org:acme"});
    let answers =
        futures::future::join_all((0..6).map(|_| gh.create("github", body.clone()))).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["data"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every create answered the same subscription");
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].collection, "/orgs/acme/hooks");
    assert_eq!(gh.list().await.len(), 1);
}

async fn a_grant_without_the_hook_scope_is_a_400_naming_it(kind: Db) {
    let Some(gh) = github_connected(kind, |fake| fake.grant_scopes("repo read:user")).await else {
        return;
    };
    for (resource, scope) in [
        ("octo/hello", "admin:repo_hook"),
        ("org:acme", "admin:org_hook"),
    ] {
        let (status, body) = gh.create("github", json!({"resource": resource})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "Missing OAuth scope");
        assert!(body["details"].as_str().unwrap().contains(scope), "{body}");
    }
    assert!(gh.fake.api.hooks().is_empty());
    assert!(gh.list().await.is_empty());
    assert_eq!(gh.subscription_calls("ok").await, 0.0);
}

async fn hand_set_up_providers_and_bad_input_are_refused(kind: Db) {
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    for provider in ["slack", "discord", "notion"] {
        let (status, body) = gh.create(provider, json!({"resource": "anything"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{provider}");
        assert_eq!(
            body["error"],
            "Webhooks of this provider are set up by hand"
        );
        assert!(body["details"].as_str().unwrap().contains("/webhook"));
    }
    for bad in [
        json!({"resource": "not a repo"}),
        json!({"resource": ""}),
        json!({"resource": "o/r", "events": ["<b>"]}),
    ] {
        let (status, body) = gh.create("github", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"], "Invalid request body", "{bad}");
    }
    let (status, body) = gh.create("github", json!({"events": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "Invalid request body");
    // A member may not; another organization's owner does not find the integration.
    let member = gh.app.member_token(1, uuid::Uuid::new_v4(), "MEMBER").await;
    let response = gh
        .app
        .get_as(&member, "/api/integrations/github/subscriptions")
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let integration: Value = gh
        .app
        .get_as(&gh.token, "/api/integrations/github")
        .await
        .json()
        .await
        .unwrap();
    let uuid = integration["data"]["id"].as_str().unwrap();
    let (_, stranger) = gh.app.owner(2).await;
    let response = gh
        .app
        .http
        .post(
            gh.app
                .url(&format!("/api/integrations/{uuid}/subscriptions")),
        )
        .bearer_auth(&stranger)
        .json(&json!({"resource": "octo/hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, _) = gh.delete(&uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(gh.fake.api.hooks().is_empty());
}

async fn a_provider_refusal_is_a_502_and_leaves_nothing(kind: Db) {
    let Some(gh) = github_connected(kind, |fake| fake.api.refuse_creates(Some(403))).await else {
        return;
    };
    let (status, body) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let details = body["details"].as_str().unwrap();
    assert!(details.contains("403"), "{body}");
    assert!(
        details.contains("Resource not accessible by integration"),
        "{body}"
    );
    assert!(gh.list().await.is_empty());
    assert_eq!(gh.subscription_calls("rejected").await, 1.0);
    // The provider relents: creating again works.
    gh.fake.api.refuse_creates(None);
    let (status, body) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["state"], "ACTIVE");
    assert_eq!(gh.fake.api.hooks().len(), 1);
}

async fn disconnect_deletes_every_hook_at_the_provider_first(kind: Db) {
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    for resource in ["octo/hello", "org:acme"] {
        let (status, _) = gh.create("github", json!({"resource": resource})).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(gh.fake.api.hooks().len(), 2);
    let response = gh
        .app
        .delete_as(&gh.token, "/api/integrations/github")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(gh.fake.api.hooks().is_empty());
    let listed = gh.list().await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s["state"] == "DELETED"), "{listed:?}");
    // The deletes went out with the token, before it was erased.
    let deletes: Vec<_> = gh
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/hooks/"))
        .collect();
    assert_eq!(deletes.len(), 2);
    assert!(deletes.iter().all(|r| r.header("authorization").is_some()));
    // Reconnecting does not bring hooks back by itself, nor duplicates.
    connect(&gh.app, &gh.token, "github").await;
    let (status, body) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(gh.fake.api.hooks().len(), 1);
}

async fn a_provider_outage_does_not_stop_the_disconnect(kind: Db) {
    let Some(gh) =
        github_connected_with(kind, |_| {}, &[("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1")]).await
    else {
        return;
    };
    let (status, _) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK);
    gh.fake.api.set_down(true);
    let response = gh
        .app
        .delete_as(&gh.token, "/api/integrations/github")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    // Not forgotten: the leftover is FAILED with the reason, for an operator to see.
    let listed = gh.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "FAILED");
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("left at the provider by the disconnect"),
        "{listed:?}"
    );
    assert_eq!(gh.fake.api.hooks().len(), 1);
    // The provider is back, but without a token nothing can delete the hook yet.
    gh.fake.api.set_down(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gh.fake.api.hooks().len(), 1);
    assert_eq!(gh.list().await[0]["state"], "FAILED");
    // Connected again: the renewer deletes the leftover with the new token.
    connect(&gh.app, &gh.token, "github").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gh.fake.api.hooks().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gh.fake.api.hooks().is_empty(), "the leftover was deleted");
    let listed = gh.list().await;
    assert_eq!(listed[0]["state"], "DELETED", "{listed:?}");
    // And watching the repository again leaves exactly one hook.
    let (status, body) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"], "ACTIVE");
    assert_eq!(gh.fake.api.hooks().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Microsoft Graph: renewal by the renewer, lifecycle notifications.
// ---------------------------------------------------------------------------------------------

const MAIL: &str = "me/mailFolders('Inbox')/messages";

async fn microsoft_connected(
    kind: Db,
    configure: impl FnOnce(&FakeProvider),
    extra: &[(&str, &str)],
) -> Option<Github> {
    standard_connected(kind, "microsoft", configure, extra).await
}

/// A provider of the standard OAuth dialect connected through the fake.
pub(crate) async fn standard_connected(
    kind: Db,
    provider: &str,
    configure: impl FnOnce(&FakeProvider),
    extra: &[(&str, &str)],
) -> Option<Github> {
    let fake = FakeProvider::start(FakeStyle::Standard).await;
    configure(&fake);
    let mut vars = fake.env(&provider.to_ascii_uppercase());
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let app = spawn_app_with_env(kind, &vars).await?;
    let (_, token) = app.owner(1).await;
    assert_eq!(
        connect(&app, &token, provider).await,
        format!("{TEST_APP_URL}/organization/integrations?success={provider}_connected")
    );
    Some(Github { app, fake, token })
}

impl Github {
    async fn microsoft_list(&self) -> Vec<Value> {
        self.list_of("microsoft").await
    }

    pub(crate) async fn list_of(&self, provider: &str) -> Vec<Value> {
        let body: Value = self
            .app
            .http
            .get(
                self.app
                    .url(&format!("/api/integrations/{provider}/subscriptions")),
            )
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"].as_array().unwrap().clone()
    }

    /// Waits (at most `within`) until `done` holds of the Microsoft subscriptions.
    async fn wait_for(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let listed = self.microsoft_list().await;
            if done(&listed) || tokio::time::Instant::now() >= deadline {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn renewals_metric(&self, outcome: &str) -> f64 {
        Scrape::fetch(&self.app.http, &self.app.service_metrics_url)
            .await
            .sum(
                "webhook_subscription_renewals_total",
                &[("provider", "microsoft"), ("outcome", outcome)],
            )
    }
}

async fn graph_renewed_once_per_lifetime_by_one_of_two_replicas(kind: Db) {
    let lifetime = chrono::Duration::seconds(6);
    let Some(mut ms) = microsoft_connected(
        kind,
        |fake| fake.api.set_graph_lifetime(lifetime),
        &[("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1")],
    )
    .await
    else {
        return;
    };
    ms.app.spawn_service_replica().await;
    let (status, created) = ms
        .create(
            "microsoft",
            json!({"resource": MAIL, "events": ["created", "updated"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let started = chrono::Utc::now();
    let item = &created["data"];
    assert_eq!(item["state"], "ACTIVE");
    let graph = ms.fake.api.graph_subscriptions();
    assert_eq!(graph.len(), 1);
    let (url, secret) = {
        let settings: Value = ms
            .app
            .get_as(&ms.token, "/api/integrations/microsoft/webhook")
            .await
            .json()
            .await
            .unwrap();
        (
            settings["data"]["url"].as_str().unwrap().to_string(),
            settings["data"]["secret"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(graph[0].notification_url, url);
    assert_eq!(graph[0].lifecycle_url, url);
    assert_eq!(graph[0].client_state, secret);
    assert_eq!(graph[0].change_type, "created,updated");
    assert_eq!(graph[0].resource, MAIL);
    assert_eq!(item["provider_subscription_id"], graph[0].id);
    assert_eq!(
        item["expires_at"],
        graph[0]
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    // A change Graph notifies is verified by the clientState the service registered.
    let answer = graph[0].notify(&ms.app.http, "created", "AAMk1").await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);

    // Two lifetimes and a half: renewed at 75 % of each (about 4.5 s and 9 s), by one
    // replica each time — never two renewals of one expiry.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let renewals = ms.fake.api.graph_renewals();
    assert_eq!(renewals.len(), 2, "{renewals:?}");
    let mut expiries: Vec<_> = renewals.iter().map(|r| r.previous_expiry).collect();
    expiries.dedup();
    assert_eq!(
        expiries.len(),
        renewals.len(),
        "one renewal per expiry: {renewals:?}"
    );
    for renewal in &renewals {
        let left = renewal.previous_expiry - renewal.at;
        assert!(
            left >= chrono::Duration::milliseconds(900),
            "renewed with only {left} of the lifetime left: {renewals:?}"
        );
        assert!(
            left <= lifetime / 2,
            "renewed too early ({left} left): {renewals:?}"
        );
    }
    assert!(renewals[0].at - started >= chrono::Duration::seconds(3));
    let listed = ms.microsoft_list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_ne!(listed[0]["renewed_at"], Value::Null);
    assert_eq!(ms.fake.api.graph_subscriptions().len(), 1);

    // Delete: nothing left at Graph.
    let (status, deleted) = ms
        .delete_of("microsoft", item["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["data"]["state"], "DELETED");
    assert!(ms.fake.api.graph_subscriptions().is_empty());
}

async fn graph_refused_renewals_end_failed_never_a_stale_active(kind: Db) {
    let Some(ms) = microsoft_connected(
        kind,
        |fake| {
            fake.api.set_graph_lifetime(chrono::Duration::seconds(8));
            fake.api.refuse_renewals(Some(403));
        },
        &[("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1")],
    )
    .await
    else {
        return;
    };
    let (status, created) = ms.create("microsoft", json!({"resource": MAIL})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        created["data"]["events"],
        json!(["created", "updated", "deleted"])
    );
    // Due at 6 s, refused; retried 1 s later (still before the expiry), refused again; the
    // next backoff (2 s) would end after the expiry: FAILED then, before it lapses.
    let listed = ms
        .wait_for(Duration::from_secs(12), |l| l[0]["state"] == "FAILED")
        .await;
    let failed_at = chrono::Utc::now();
    assert_eq!(listed[0]["state"], "FAILED", "{listed:?}");
    let error = listed[0]["last_error"].as_str().unwrap();
    assert!(error.contains("403"), "{error}");
    assert_eq!(ms.renewals_metric("failed").await, 1.0);
    assert_eq!(ms.renewals_metric("retried").await, 1.0);
    assert_eq!(ms.renewals_metric("renewed").await, 0.0);
    let expires_at: chrono::DateTime<chrono::Utc> =
        listed[0]["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        failed_at < expires_at,
        "FAILED only at {failed_at}, expiry {expires_at}"
    );
    assert_eq!(ms.fake.api.graph_renewals().len(), 0);
}

async fn graph_lifecycle_notifications_renew_recreate_and_reach_consumers(kind: Db) {
    let Some(ms) = microsoft_connected(kind, |_| {}, &[]).await else {
        return;
    };
    let (status, created) = ms.create("microsoft", json!({"resource": MAIL})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let graph = ms.fake.api.graph_subscriptions().remove(0);

    // reauthorizationRequired: renewed at once.
    let answer = graph
        .lifecycle(&ms.app.http, "reauthorizationRequired")
        .await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let listed = ms
        .wait_for(Duration::from_secs(5), |l| {
            l[0]["renewed_at"] != Value::Null
        })
        .await;
    assert_ne!(listed[0]["renewed_at"], Value::Null);
    let renewals = ms.fake.api.graph_renewals();
    assert_eq!(renewals.len(), 1);
    assert_eq!(renewals[0].id, graph.id);

    // subscriptionRemoved: created again, one subscription at Graph, the new id stored.
    ms.fake.api.remove_graph_subscription(&graph.id);
    let answer = graph.lifecycle(&ms.app.http, "subscriptionRemoved").await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let listed = ms
        .wait_for(Duration::from_secs(5), |l| {
            l[0]["provider_subscription_id"] != Value::String(graph.id.clone())
        })
        .await;
    let now_at_graph = ms.fake.api.graph_subscriptions();
    assert_eq!(now_at_graph.len(), 1);
    assert_ne!(now_at_graph[0].id, graph.id);
    assert_eq!(listed[0]["provider_subscription_id"], now_at_graph[0].id);
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_eq!(ms.renewals_metric("repaired").await, 1.0);

    // missed: a `subscription.missed` event of the integration reaches a consumer.
    let answer = now_at_graph[0].lifecycle(&ms.app.http, "missed").await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let missed = webhook_event::Entity::find()
        .filter(webhook_event::Column::EventType.eq("subscription.missed"))
        .count(&ms.app.db)
        .await
        .unwrap();
    assert_eq!(missed, 1);
    let mut client = WebhookServiceClient::connect(ms.app.grpc_url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SubscribeEventsRequest {
        provider: Some("microsoft".into()),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", ms.app.service_token())
            .parse()
            .unwrap(),
    );
    let mut stream = client.subscribe_events(request).await.unwrap().into_inner();
    let mut types = Vec::new();
    while !types.iter().any(|t| t == "subscription.missed") {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream open");
        assert_eq!(event.provider, "microsoft");
        types.push(event.event_type);
    }
    assert!(types.len() <= 3, "{types:?}");
}

async fn a_hook_deleted_behind_our_back_is_back_within_the_reconciliation_interval(kind: Db) {
    let Some(gh) = github_connected_with(
        kind,
        |_| {},
        &[
            ("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1"),
            ("SUBSCRIPTION_RECONCILE_INTERVAL_SECS", "2"),
        ],
    )
    .await
    else {
        return;
    };
    let (status, created) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK);
    let first = gh.fake.api.hooks().remove(0);
    gh.fake.api.remove_hook(first.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while gh.fake.api.hooks().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1, "the hook is back");
    assert_ne!(hooks[0].id, first.id);
    assert_eq!(hooks[0].url, first.url);
    assert_eq!(hooks[0].secret, first.secret);
    let listed = gh.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["data"]["id"]);
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_eq!(
        listed[0]["provider_subscription_id"],
        hooks[0].id.to_string()
    );
    let repaired = Scrape::fetch(&gh.app.http, &gh.app.service_metrics_url)
        .await
        .sum(
            "webhook_subscription_renewals_total",
            &[("provider", "github"), ("outcome", "repaired")],
        );
    assert_eq!(repaired, 1.0);
    // A hook still there is only looked at: no second one appears. One to our URL that we do
    // not own (a crashed create's) is removed; another application's hook stays.
    let stray = gh
        .fake
        .api
        .add_hook("/repos/octo/hello/hooks", &first.url, &first.secret);
    let foreign = gh.fake.api.add_hook(
        "/repos/octo/hello/hooks",
        "https://ci.example.com/hook",
        "theirs",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<u64> = gh.fake.api.hooks().iter().map(|h| h.id).collect();
    assert_eq!(ids, [hooks[0].id, foreign], "stray {stray} removed");
    let scrape = Scrape::fetch(&gh.app.http, &gh.app.service_metrics_url).await;
    assert_eq!(
        scrape.sum(
            "webhook_subscriptions",
            &[("provider", "github"), ("state", "ACTIVE")]
        ),
        1.0
    );
    assert_eq!(
        scrape.sum(
            "webhook_subscriptions",
            &[("provider", "github"), ("state", "FAILED")]
        ),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// Google: channels replaced before they expire, the overlap deduplicated.
// ---------------------------------------------------------------------------------------------

async fn google_channel_replaced_before_expiry_and_a_doubly_notified_change_stored_once(kind: Db) {
    let Some(g) = standard_connected(
        kind,
        "google",
        |fake| fake.api.set_google_lifetime(chrono::Duration::seconds(6)),
        &[("SUBSCRIPTION_RENEW_INTERVAL_SECS", "1")],
    )
    .await
    else {
        return;
    };
    let (status, created) = g
        .create("google", json!({"resource": "drive:changes"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["data"]["state"], "ACTIVE");
    assert_eq!(created["data"]["events"], json!(["change"]));
    let channels = g.fake.api.google_channels();
    assert_eq!(channels.len(), 1);
    let old = channels[0].clone();
    let settings: Value = g
        .app
        .get_as(&g.token, "/api/integrations/google/webhook")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old.address, settings["data"]["url"].as_str().unwrap());
    assert_eq!(old.token, settings["data"]["secret"].as_str().unwrap());
    assert_eq!(old.watched, "drive:changes");
    assert_eq!(created["data"]["provider_subscription_id"], old.id);
    let events = || async {
        webhook_event::Entity::find()
            .count(&g.app.db)
            .await
            .unwrap()
    };
    assert_eq!(
        old.notify(&g.app.http, 1, "sync").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        old.notify(&g.app.http, 2, "change").await.status(),
        StatusCode::OK
    );
    assert_eq!(events().await, 1);

    // At 75 % of its lifetime a new channel opens, then the old one is stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (old_now, new) = loop {
        let channels = g.fake.api.google_channels();
        if channels.len() == 2 && channels[0].stopped_at.is_some() {
            break (channels[0].clone(), channels[1].clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "{channels:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        new.opened_at < old.expires_at,
        "the new channel opened before the old expired"
    );
    assert!(old_now.stopped_at.unwrap() >= new.opened_at);
    assert!(old_now.stopped_at.unwrap() < old.expires_at);
    assert_eq!(new.resource_id, old.resource_id);
    assert_eq!(new.token, old.token);

    // One change, notified on both channels during the overlap: stored once.
    let on_old: Value = old
        .notify(&g.app.http, 3, "change")
        .await
        .json()
        .await
        .unwrap();
    let on_new: Value = new
        .notify(&g.app.http, 2, "change")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(on_old["eventId"], on_new["eventId"], "{on_old} {on_new}");
    assert_eq!(events().await, 2);

    let listed = g.list_of("google").await;
    assert_eq!(listed[0]["state"], "ACTIVE");
    assert_eq!(listed[0]["provider_subscription_id"], new.id);
    assert_ne!(listed[0]["renewed_at"], Value::Null);

    // Delete stops the current channel.
    let (status, deleted) = g
        .delete_of("google", created["data"]["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["data"]["state"], "DELETED");
    let open: Vec<_> = g
        .fake
        .api
        .google_channels()
        .into_iter()
        .filter(|c| c.stopped_at.is_none())
        .collect();
    // The renewer may have opened a third channel meanwhile; none stays open but expired ones.
    assert!(
        open.iter().all(|c| c.id != new.id),
        "the current channel was stopped: {open:?}"
    );
}

async fn google_calendar_channels_and_google_resources(kind: Db) {
    let Some(g) = standard_connected(kind, "google", |_| {}, &[]).await else {
        return;
    };
    for bad in [
        json!({"resource": "drive"}),
        json!({"resource": "calendar:a b"}),
        json!({"resource": "drive:changes", "events": ["created"]}),
    ] {
        let (status, body) = g.create("google", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"], "Invalid request body");
    }
    let (status, created) = g
        .create(
            "google",
            json!({"resource": "calendar:team@group.calendar.google.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let channels = g.fake.api.google_channels();
    assert_eq!(channels.len(), 1);
    assert_eq!(
        channels[0].watched,
        "calendar:team@group.calendar.google.com"
    );
    let (status, _) = g
        .delete_of("google", created["data"]["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(g.fake.api.google_channels()[0].stopped_at.is_some());
}

// ---------------------------------------------------------------------------------------------
// GitLab: project and group hooks with the integration's token.
// ---------------------------------------------------------------------------------------------

async fn gitlab_project_hook_created_once_verified_and_deleted(kind: Db) {
    let Some(gl) = standard_connected(kind, "gitlab", |_| {}, &[]).await else {
        return;
    };
    let (status, created) = gl
        .create(
            "gitlab",
            json!({"resource": "acme/api", "events": ["push", "merge_requests"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["data"]["state"], "ACTIVE");
    let hooks = gl.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.collection, "/projects/acme%2Fapi/hooks");
    assert_eq!(hook.insecure_ssl, "0");
    let mut events = hook.events.clone();
    events.sort();
    assert_eq!(events, ["merge_requests", "push"]);
    let settings: Value = gl
        .app
        .get_as(&gl.token, "/api/integrations/gitlab/webhook")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(hook.url, settings["data"]["url"].as_str().unwrap());
    assert_eq!(hook.secret, settings["data"]["secret"].as_str().unwrap());
    let payload = json!({"object_kind": "push", "ref": "refs/heads/main"});
    let first: Value = hook
        .deliver_gitlab(&gl.app.http, "Push Hook", "uuid-1", &payload)
        .await
        .json()
        .await
        .unwrap();
    let again: Value = hook
        .deliver_gitlab(&gl.app.http, "Push Hook", "uuid-1", &payload)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["eventId"], again["eventId"], "{first}");
    assert_eq!(
        webhook_event::Entity::find()
            .count(&gl.app.db)
            .await
            .unwrap(),
        1
    );
    let (status, again) = gl.create("gitlab", json!({"resource": "acme/api"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["id"], created["data"]["id"]);
    assert_eq!(gl.fake.api.hooks().len(), 1);
    let (status, body) = gl
        .create(
            "gitlab",
            json!({"resource": "group:7", "events": ["pull_request"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, deleted) = gl
        .delete_of("gitlab", created["data"]["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["data"]["state"], "DELETED");
    assert!(gl.fake.api.hooks().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Bitbucket: repository and workspace hooks signed with the integration's secret.
// ---------------------------------------------------------------------------------------------

async fn bitbucket_repository_hook_created_once_verified_and_deleted(kind: Db) {
    let Some(bb) = standard_connected(kind, "bitbucket", |_| {}, &[]).await else {
        return;
    };
    let (status, created) = bb
        .create(
            "bitbucket",
            json!({"resource": "acme/api", "events": ["repo:push", "pullrequest:created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let hooks = bb.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.collection, "/repositories/acme/api/hooks");
    assert_eq!(hook.events, ["repo:push", "pullrequest:created"]);
    assert_eq!(
        created["data"]["provider_subscription_id"],
        test_support::fake_provider_api::bitbucket_uuid(hook.id)
    );
    let payload = json!({"push": {"changes": []}, "repository": {"full_name": "acme/api"}});
    let first = hook
        .deliver_bitbucket(&bb.app.http, "repo:push", "req-1", &payload)
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = hook
        .deliver_bitbucket(&bb.app.http, "repo:push", "req-1", &payload)
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        webhook_event::Entity::find()
            .count(&bb.app.db)
            .await
            .unwrap(),
        1
    );
    let (status, again) = bb
        .create("bitbucket", json!({"resource": "acme/api"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["id"], created["data"]["id"]);
    assert_eq!(bb.fake.api.hooks().len(), 1);
    let (status, deleted) = bb
        .delete_of("bitbucket", created["data"]["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["data"]["state"], "DELETED");
    assert!(bb.fake.api.hooks().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Linear: the secret Linear issues is stored and shared by the integration's webhooks.
// ---------------------------------------------------------------------------------------------

async fn linear_webhooks_share_the_secret_linear_issued(kind: Db) {
    let Some(ln) = standard_connected(kind, "linear", |_| {}, &[]).await else {
        return;
    };
    let (status, first) = ln.create("linear", json!({"resource": "all"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["data"]["events"], json!(["Issue", "Comment"]));
    let hooks = ln.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].collection, "/linear/all");
    assert!(
        hooks[0].secret.starts_with("lin_wh_issued_"),
        "Linear issued it"
    );
    assert_eq!(
        first["data"]["provider_subscription_id"],
        test_support::fake_provider_api::linear_id(hooks[0].id)
    );
    // A second webhook is created with the secret Linear issued for the first.
    let (status, second) = ln
        .create(
            "linear",
            json!({"resource": "team-42", "events": ["Issue"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let hooks = ln.fake.api.hooks();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].secret, hooks[0].secret);
    // Both deliver, verified with the stored provider-issued secret.
    for (n, hook) in hooks.iter().enumerate() {
        let answer = hook
            .deliver_linear(
                &ln.app.http,
                "Issue",
                &format!("delivery-{n}"),
                &json!({"action": "create", "type": "Issue", "data": {"id": "i"}}),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK, "{n}");
    }
    assert_eq!(
        webhook_event::Entity::find()
            .count(&ln.app.db)
            .await
            .unwrap(),
        2
    );
    let (status, again) = ln.create("linear", json!({"resource": "all"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"]["id"], first["data"]["id"]);
    assert_eq!(ln.fake.api.hooks().len(), 2);
    for created in [&first, &second] {
        let (status, deleted) = ln
            .delete_of("linear", created["data"]["id"].as_str().unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        assert_eq!(deleted["data"]["state"], "DELETED");
    }
    assert!(ln.fake.api.hooks().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Asana: the service opens the handshake window for its own POST /webhooks.
// ---------------------------------------------------------------------------------------------

async fn asana_webhook_created_through_a_handshake_the_service_opened(kind: Db) {
    let Some(asana) = standard_connected(kind, "asana", |_| {}, &[]).await else {
        return;
    };
    let (status, created) = asana
        .create("asana", json!({"resource": "1202345678901234"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["data"]["state"], "ACTIVE");
    let hooks = asana.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].collection, "/asana/1202345678901234");
    assert_eq!(
        created["data"]["provider_subscription_id"],
        hooks[0].id.to_string()
    );
    // The handshake's secret verifies Asana's deliveries.
    let payload = json!({"events": [{"action": "changed", "resource": {"gid": "1", "resource_type": "task"}, "created_at": "2026-12-04T00:00:00.000Z"}]});
    let answer = hooks[0].deliver_asana(&asana.app.http, &payload).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        webhook_event::Entity::find()
            .count(&asana.app.db)
            .await
            .unwrap(),
        1
    );
    // The window closed with the handshake: a forged handshake now is refused.
    let forged = asana
        .app
        .http
        .post(&hooks[0].url)
        .header("x-hook-secret", "attacker-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // One Asana subscription per integration.
    let (status, body) = asana.create("asana", json!({"resource": "99"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, deleted) = asana
        .delete_of("asana", created["data"]["id"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert!(asana.fake.api.hooks().is_empty());
}

async fn a_create_that_crashed_is_taken_over_and_its_leftover_removed(kind: Db) {
    use integration_service::store::entities::webhook_subscription::{self, SubscriptionState};
    use sea_orm::{ActiveValue::Set, EntityTrait as _};
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    let (url, secret) = gh.webhook_settings().await;
    let integration: Value = gh
        .app
        .get_as(&gh.token, "/api/integrations/github")
        .await
        .json()
        .await
        .unwrap();
    let integration_id: uuid::Uuid = integration["data"]["id"].as_str().unwrap().parse().unwrap();
    // A replica created the hook at GitHub, then died before storing its answer.
    let leftover = gh
        .fake
        .api
        .add_hook("/repos/octo/hello/hooks", &url, &secret);
    let abandoned = uuid::Uuid::new_v4();
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    webhook_subscription::Entity::insert(webhook_subscription::ActiveModel {
        id: Set(abandoned),
        integration_id: Set(integration_id),
        organization_id: Set(1),
        provider: Set("github".into()),
        resource: Set("octo/hello".into()),
        events: Set("[\"push\"]".into()),
        state: Set(SubscriptionState::Pending),
        lease_owner: Set(Some("service-dead".into())),
        lease_expires_at: Set(Some(past)),
        attempts: Set(0),
        created_at: Set(past),
        updated_at: Set(past),
        ..Default::default()
    })
    .exec(&gh.app.db)
    .await
    .unwrap();
    let (status, created) = gh.create("github", json!({"resource": "octo/hello"})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["data"]["id"], abandoned.to_string());
    assert_eq!(created["data"]["state"], "ACTIVE");
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1, "the leftover {leftover} was removed");
    assert_ne!(hooks[0].id, leftover);
    assert_eq!(
        created["data"]["provider_subscription_id"],
        hooks[0].id.to_string()
    );
}

/// `SubscriptionService` called directly, as an internal service does (a service_role token,
/// the organization in `x-organization-id`): create (idempotent), list, delete, with the same
/// hook at the provider; another organization's caller finds nothing and changes nothing; a
/// MEMBER's session is refused; bad input is INVALID_ARGUMENT and reaches no provider.
async fn subscription_service_over_grpc_as_an_internal_caller(kind: Db) {
    use integrations_proto::v1::{
        subscription_service_client::SubscriptionServiceClient, CreateSubscriptionRequest,
        DeleteSubscriptionRequest, ListSubscriptionsRequest,
    };
    use tonic::{Code, Request};

    fn as_caller<T>(token: &str, org: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata.insert("x-organization-id", org.parse().unwrap());
        request
    }

    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    let channel = tonic::transport::Endpoint::from_shared(gh.app.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SubscriptionServiceClient::new(channel);
    let service = gh.app.service_token();
    let create = |resource: &str| CreateSubscriptionRequest {
        integration_id: "github".into(),
        resource: resource.into(),
        events: vec!["push".into()],
    };

    let created = client
        .create_subscription(as_caller(&service, "1", create("octo/hello")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state, "ACTIVE");
    assert_eq!(created.provider, "github");
    assert_eq!(created.resource, "octo/hello");
    assert_eq!(created.events, ["push"]);
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        created.provider_subscription_id,
        Some(hooks[0].id.to_string())
    );
    let again = client
        .create_subscription(as_caller(&service, "1", create("octo/hello")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.id, created.id,
        "create is idempotent per integration and resource"
    );
    assert_eq!(gh.fake.api.hooks().len(), 1);

    // Another organization: its own GitHub is not connected; our subscription is not found.
    gh.app.owner(2).await;
    let foreign = client
        .delete_subscription(as_caller(
            &service,
            "2",
            DeleteSubscriptionRequest {
                integration_id: created.integration_id.clone(),
                subscription_id: created.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound, "{foreign:?}");
    let listed = client
        .list_subscriptions(as_caller(
            &service,
            "2",
            ListSubscriptionsRequest {
                integration_id: "github".into(),
            },
        ))
        .await
        .map(|answer| answer.into_inner().subscriptions);
    assert!(
        listed
            .as_ref()
            .map_or(true, |subscriptions| subscriptions.is_empty()),
        "{listed:?}"
    );
    assert_eq!(
        gh.fake.api.hooks().len(),
        1,
        "nothing changed at the provider"
    );

    // A MEMBER's session may not manage subscriptions.
    let member = gh.app.member_token(1, uuid::Uuid::new_v4(), "MEMBER").await;
    let refused = client
        .create_subscription(as_caller(&member, "1", create("octo/other")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Bad input reaches no provider.
    for resource in ["", "   "] {
        let bad = client
            .create_subscription(as_caller(&service, "1", create(resource)))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{resource:?}: {bad:?}");
    }
    assert_eq!(gh.fake.api.hooks().len(), 1);

    let listed = client
        .list_subscriptions(as_caller(
            &service,
            "1",
            ListSubscriptionsRequest {
                integration_id: "github".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);

    let deleted = client
        .delete_subscription(as_caller(
            &service,
            "1",
            DeleteSubscriptionRequest {
                integration_id: "github".into(),
                subscription_id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.state, "DELETED");
    assert!(gh.fake.api.hooks().is_empty(), "deleted at the provider");
}

/// The integration page's subscriptions section (route 16 over route 15): a form post creates
/// the hook at the provider, the table shows its state and a delete button, a refusal is said
/// in place with the form kept, a cross-site post creates nothing, and delete removes the hook.
async fn the_console_creates_lists_and_deletes_subscriptions(kind: Db) {
    let Some(gh) = github_connected(kind, |_| {}).await else {
        return;
    };
    let browser = crate::console::Browser::new(&gh.app, &gh.token);
    let page = browser.get("/console/integrations/github").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("No subscriptions yet."), "{}", page.body);

    // Cross-site: nothing is created at the provider or stored.
    let refused = browser
        .post_raw(
            "/console/integrations/github/subscriptions",
            &[("resource", "octo/hello")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(gh.fake.api.hooks().is_empty());
    assert!(gh.list().await.is_empty());

    // A resource the service refuses: a 400 page, the error in the section, the form kept.
    let bad = browser
        .post(
            "/console/integrations/github/subscriptions",
            &[("resource", "not a repository"), ("events", "push")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.body.contains("id=\"subscription-error\""),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("value=\"not a repository\""));
    assert!(gh.fake.api.hooks().is_empty());

    let created = browser
        .post(
            "/console/integrations/github/subscriptions",
            &[("resource", "octo/hello"), ("events", "push, issues")],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(created
        .location()
        .ends_with("?done=subscription-created#subscriptions"));
    let hooks = gh.fake.api.hooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].events, ["push", "issues"]);
    let listed = gh.list().await;
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let integration = listed[0]["integration_id"].as_str().unwrap().to_string();

    let page = browser
        .get("/console/integrations/github?done=subscription-created")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Subscription created at the provider."));
    assert!(
        page.body.contains("<code>octo/hello</code>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("push, issues"));
    assert!(page.body.contains(">ACTIVE<"));
    // The page's forms name the integration by its id.
    let delete_path = format!("/console/integrations/{integration}/subscriptions/{id}/delete");
    assert!(page.body.contains(&delete_path), "{}", page.body);
    let (_, secret) = gh.webhook_settings().await;
    assert!(!page.body.contains(&secret), "no secret in the page");

    let deleted = browser.post(&delete_path, &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert!(gh.fake.api.hooks().is_empty());
    let listed = gh.list().await;
    assert_eq!(listed[0]["state"], "DELETED");
    let page = browser.get("/console/integrations/github").await;
    assert!(page.body.contains(">DELETED<"));
    assert!(
        !page.body.contains(&delete_path),
        "no delete button for a deleted one"
    );

    // Another organization's admin sees a 404 page and deletes nothing.
    let (_, other) = gh.app.owner(2).await;
    let intruder = crate::console::Browser::new(&gh.app, &other);
    let page = intruder
        .post(
            &format!(
                "/console/integrations/{}/subscriptions",
                listed[0]["integration_id"].as_str().unwrap()
            ),
            &[("resource", "octo/other")],
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(gh.fake.api.hooks().is_empty());
}
