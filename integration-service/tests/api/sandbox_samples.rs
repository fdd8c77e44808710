//! The sandbox's sample deliveries verify at our own webhook URLs once the provider was
//! connected through the sandbox: a GitHub push (the integration's secret), a Slack message
//! event (the sandbox's signing secret, routed by the sandbox's workspace) and a Graph
//! notification (the secret as `clientState`) are each stored as one event of the integration
//! that `GET /api/integrations/{provider}/webhook` named, on SQLite and PostgreSQL.

use integration_service::store::entities::webhook_event;
use sandbox::{
    dev::SANDBOX_SLACK_SIGNING_SECRET,
    samples::{self, Sample},
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;
use test_support::{
    dual_db_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::connect,
    spawn_app_with_env, Db, TEST_APP_URL,
};
use uuid::Uuid;

dual_db_test!(samples_of_every_sandbox_provider_are_stored_for_their_integration);

async fn samples_of_every_sandbox_provider_are_stored_for_their_integration(kind: Db) {
    let github = FakeProvider::start(FakeStyle::Github).await;
    let slack = FakeProvider::start(FakeStyle::Slack).await;
    let microsoft = FakeProvider::start(FakeStyle::Standard).await;
    let mut vars = github.env("GITHUB");
    vars.extend(slack.env("SLACK"));
    vars.extend(microsoft.env("MICROSOFT"));
    vars.push((
        "SLACK_SIGNING_SECRET".into(),
        SANDBOX_SLACK_SIGNING_SECRET.into(),
    ));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, token) = app.owner(1).await;
    for (provider, sample, secret_from_settings, status, event_type) in [
        ("github", Sample::GithubPush, true, 200, "push"),
        ("slack", Sample::SlackEvent, false, 200, "message"),
        ("microsoft", Sample::GraphNotification, true, 202, "created"),
    ] {
        assert_eq!(
            connect(&app, &token, provider).await,
            format!("{TEST_APP_URL}/organization/integrations?success={provider}_connected")
        );
        let settings: Value = app
            .get_as(&token, &format!("/api/integrations/{provider}/webhook"))
            .await
            .json()
            .await
            .unwrap();
        let url = settings["data"]["url"].as_str().unwrap();
        let secret = if secret_from_settings {
            settings["data"]["secret"].as_str().unwrap()
        } else {
            SANDBOX_SLACK_SIGNING_SECRET
        };
        let answer = samples::send(&app.http, sample, url, secret).await.unwrap();
        assert_eq!(answer.status, status, "{provider}: {}", answer.body);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        let event_id = body["eventId"].as_str().unwrap();

        let integration: Value = app
            .get_as(&token, &format!("/api/integrations/{provider}"))
            .await
            .json()
            .await
            .unwrap();
        let integration_id: Uuid = integration["data"]["id"].as_str().unwrap().parse().unwrap();
        let stored = || async {
            webhook_event::Entity::find()
                .filter(webhook_event::Column::IntegrationId.eq(integration_id))
                .all(&app.db)
                .await
                .unwrap()
        };
        let events = stored().await;
        assert_eq!(
            events.len(),
            1,
            "{provider}: one event for the connected integration"
        );
        assert_eq!(events[0].id.to_string(), event_id);
        assert_eq!(events[0].event_type, event_type, "{provider}");

        // A sample signed with anything else is refused and stores nothing.
        let forged = samples::send(&app.http, sample, url, "not-the-secret")
            .await
            .unwrap();
        assert!(
            (400..500).contains(&forged.status),
            "{provider}: {}",
            forged.status
        );
        assert_eq!(
            stored().await.len(),
            1,
            "{provider}: nothing stored for a forgery"
        );
    }
}
