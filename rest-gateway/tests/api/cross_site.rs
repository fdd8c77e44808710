//! Cross-site request forgery, as a hostile page in the user's browser would try it: every
//! state-changing route authenticated by the session cookie, sent from another origin or as a
//! CORS "simple request" (form or text/plain body), is refused (403) before the service and changes
//! nothing; the frontend at APP_URL, and bearer calls from anywhere, still work.

use integration_service::store::{
    self,
    entities::{integration, oauth_state},
};
use reqwest::{header, Method, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::Value;
use test_support::{dual_test, TestApp, TEST_APP_URL};

dual_test!(
    forged_cross_site_cookie_requests_change_nothing,
    the_frontend_and_bearer_callers_are_not_refused,
    an_authorization_that_is_not_a_bearer_never_rides_on_the_cookie,
);

/// A cross-site request adding `Authorization: Basic ...` (or an empty bearer) used to skip
/// the forgery check and then be served on the session cookie: it rotated a secret and
/// disconnected an integration. Now the check applies (403), and even from the frontend's
/// origin the service refuses the unusable header (401) instead of falling back to the cookie.
async fn an_authorization_that_is_not_a_bearer_never_rides_on_the_cookie(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let before = connected_github(&app).await;
    let id = before.id.to_string();
    let session = format!("sb-access-token={token}");
    for authorization in ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer"] {
        for (method, path) in [
            (
                Method::POST,
                format!("/api/integrations/{id}/webhook/rotate"),
            ),
            (Method::DELETE, format!("/api/integrations/{id}")),
        ] {
            let cross_site = app
                .http
                .request(method.clone(), app.url(&path))
                .header(header::COOKIE, &session)
                .header(header::AUTHORIZATION, authorization)
                .header(header::ORIGIN, EVIL)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(
                cross_site.status(),
                StatusCode::FORBIDDEN,
                "{authorization:?} {method} {path}"
            );
            let same_site = app
                .http
                .request(method.clone(), app.url(&path))
                .header(header::COOKIE, &session)
                .header(header::AUTHORIZATION, authorization)
                .header(header::ORIGIN, TEST_APP_URL)
                .header(header::CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(
                same_site.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?} {method} {path}"
            );
        }
    }
    let after = integration::Entity::find_by_id(before.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(after == before, "nothing rotated, nothing disconnected");
}

/// (method, path, content type, Origin, Sec-Fetch-Site, expected status)
type Attack = (
    Method,
    String,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    u16,
);

const EVIL: &str = "https://evil.example";

async fn connected_github(app: &TestApp) -> integration::Model {
    let record = store::integrations::get_or_create(&app.db, 1, "github")
        .await
        .unwrap();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.update(&app.db).await.unwrap()
}

async fn forged_cross_site_cookie_requests_change_nothing(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let before = connected_github(&app).await;
    let id = before.id.to_string();
    let session = format!("sb-access-token={token}");
    let event = uuid::Uuid::new_v4();
    let attacks: Vec<Attack> = vec![
        // A hidden form on another site: no preflight, cookie attached.
        (
            Method::POST,
            format!("/api/integrations/{id}/webhook/rotate"),
            Some("application/x-www-form-urlencoded"),
            Some(EVIL),
            Some("cross-site"),
            403,
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/authorize"),
            Some("text/plain"),
            Some(EVIL),
            None,
            403,
        ),
        // The same without Origin (older browsers, stripped by a proxy): the content type decides.
        (
            Method::POST,
            format!("/api/integrations/{id}/webhook/rotate"),
            Some("text/plain"),
            None,
            None,
            403,
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/authorize"),
            None,
            None,
            None,
            403,
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/events/{event}/replay"),
            Some("multipart/form-data; boundary=x"),
            None,
            None,
            403,
        ),
        // JSON from another origin (a preflight the attacker's page would not pass either).
        (
            Method::PATCH,
            format!("/api/integrations/{id}"),
            Some("application/json"),
            Some(EVIL),
            None,
            403,
        ),
        (
            Method::PUT,
            format!("/api/integrations/{id}/webhook"),
            Some("application/json"),
            Some("null"),
            None,
            403,
        ),
        (
            Method::DELETE,
            format!("/api/integrations/{id}"),
            None,
            Some(EVIL),
            None,
            403,
        ),
        (
            Method::DELETE,
            "/api/integrations/github".into(),
            None,
            None,
            Some("cross-site"),
            403,
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/events/{event}/replay"),
            Some("application/json"),
            Some(EVIL),
            None,
            403,
        ),
        (
            Method::POST,
            format!("/api/integrations/{id}/webhook/handshake"),
            Some("text/plain"),
            None,
            None,
            403,
        ),
        (
            Method::POST,
            "/api/integrations/github/callback".into(),
            Some("application/json"),
            Some(EVIL),
            None,
            403,
        ),
    ];
    for (method, path, content_type, origin, fetch_site, expected) in attacks {
        let mut request = app
            .http
            .request(method.clone(), app.url(&path))
            .header(header::COOKIE, &session)
            .body(r#"{"config":{"planted":true},"secret":"whsec_AAAA","gracePeriodSeconds":1}"#);
        if let Some(value) = content_type {
            request = request.header(header::CONTENT_TYPE, value);
        }
        if let Some(value) = origin {
            request = request.header(header::ORIGIN, value);
        }
        if let Some(value) = fetch_site {
            request = request.header("sec-fetch-site", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        assert!(
            response.headers().get(header::SET_COOKIE).is_none(),
            "{method} {path}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    let after = integration::Entity::find_by_id(before.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(after == before, "the integration row changed");
    assert_eq!(oauth_state::Entity::find().count(&app.db).await.unwrap(), 0);
}

async fn the_frontend_and_bearer_callers_are_not_refused(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let before = connected_github(&app).await;
    // The frontend: cookie, JSON, its own Origin (any case), as fetch() sends it.
    let response = app
        .http
        .patch(app.url("/api/integrations/github"))
        .header(header::COOKIE, format!("sb-access-token={token}"))
        .header(header::ORIGIN, TEST_APP_URL.to_ascii_uppercase())
        .header("sec-fetch-site", "cross-site")
        .header(header::CONTENT_TYPE, "application/json")
        .body(r##"{"config":{"channel":"#ops"}}"##)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .http
        .post(app.url("/api/integrations/github/authorize"))
        .header(header::COOKIE, format!("sb-access-token={token}"))
        .header(header::ORIGIN, TEST_APP_URL)
        .header(header::CONTENT_TYPE, "application/json")
        .send()
        .await
        .unwrap();
    // GitHub has no client credentials here: the service answered, the gateway let it through.
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "GitHub is not configured");
    // A bearer call is not ambient: another Origin does not matter.
    let response = app
        .http
        .delete(app.url("/api/integrations/github"))
        .bearer_auth(&token)
        .header(header::ORIGIN, EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let after = integration::Entity::find_by_id(before.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!after.connected);
    assert_eq!(after.config["channel"], "#ops");
}
