//! Routes 1–3 and 10 end to end: real service and gateway on real sockets, on SQLite and
//! PostgreSQL, against every authentication and authorization case of the SPEC.

use base64::Engine;
use integration_service::store::{entities::integration, entities::webhook_event};
use reqwest::{header, Method, StatusCode};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, PaginatorTrait};
use serde_json::{json, Value};
use test_support::{dual_test, TestApp};
use uuid::Uuid;

struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Value,
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = app.http.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request).await
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    Reply {
        status,
        headers,
        body,
    }
}

/// The four management routes, each with a body where it takes one.
fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/integrations".to_string(), None),
        (Method::GET, format!("/api/integrations/{id}"), None),
        (
            Method::PATCH,
            format!("/api/integrations/{id}"),
            Some(json!({"syncEnabled": true})),
        ),
        (Method::DELETE, format!("/api/integrations/{id}"), None),
    ]
}

/// Creates the organization's github record and marks it connected with secrets stored.
async fn connected_github(app: &TestApp, token: &str) -> integration::Model {
    let created = call(
        app,
        Method::PATCH,
        "/api/integrations/github",
        Some(token),
        Some(json!({})),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    let id: Uuid = created.body["data"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let record = integration::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active: integration::ActiveModel = record.into();
    active.connected = Set(true);
    active.status = Set(Some(integration::IntegrationStatus::Active));
    active.access_token = Set(Some("SECRET-ACCESS-TOKEN".into()));
    active.refresh_token = Set(Some("SECRET-REFRESH-TOKEN".into()));
    active.webhook_secret = Set(Some("SECRET-WEBHOOK".into()));
    active.permissions = Set(Some(
        vec!["repo".to_string(), "read:user".to_string()].into(),
    ));
    active.update(&app.db).await.unwrap()
}

fn assert_no_store(reply: &Reply) {
    assert_eq!(
        reply.headers.get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    assert!(reply
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

dual_test!(
    list_shows_every_catalog_provider_as_available,
    list_shows_a_record_in_the_exact_shape_without_secrets,
    every_route_requires_a_valid_session,
    members_are_forbidden_on_every_route,
    org_id_cookie_of_a_foreign_organization_is_forbidden,
    another_organizations_uuid_is_not_found,
    provider_name_and_uuid_address_the_same_integration,
    both_session_cookie_forms_authenticate,
    service_role_acts_on_the_named_organization,
    active_organization_is_the_highest_role_then_lowest_id,
    the_list_holds_the_active_organizations_records_only,
    patch_refuses_bad_input_and_changes_nothing,
    patch_merges_config_and_accepts_snake_case,
    delete_is_soft_idempotent_and_keeps_events,
    unknown_routes_and_methods_answer_json,
    database_unavailable_answers_503,
    concurrent_patches_lose_no_config_key,
);

async fn concurrent_patches_lose_no_config_key(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let patches = (0..12).map(|i| {
        let request = app
            .http
            .patch(app.url("/api/integrations/github"))
            .bearer_auth(&token)
            .json(&json!({"config": {format!("key{i}"): i}}));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(patches).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let reply = call(
        &app,
        Method::GET,
        "/api/integrations/github",
        Some(&token),
        None,
    )
    .await;
    let config = reply.body["data"]["config"].as_object().unwrap();
    assert_eq!(config.len(), 12, "{config:?}");
    assert_eq!(
        integration::Entity::find().count(&app.db).await.unwrap(),
        1,
        "one record"
    );
}

async fn list_shows_every_catalog_provider_as_available(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let reply = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_no_store(&reply);
    let data = reply.body["data"].as_array().unwrap();
    assert_eq!(
        data[..2],
        [
            json!({"id": "github", "provider": "github", "organization_id": 1, "connected": false,
             "status": null, "permissions": [], "config": {}, "sync_enabled": false,
             "sync_frequency": null, "webhook_url": null, "created_at": null, "updated_at": null,
             "display_name": "GitHub", "account_id": null, "account_name": null}),
            json!({"id": "slack", "provider": "slack", "organization_id": 1, "connected": false,
             "status": null, "permissions": [], "config": {}, "sync_enabled": false,
             "sync_frequency": null, "webhook_url": null, "created_at": null, "updated_at": null,
             "display_name": "Slack", "account_id": null, "account_name": null})
        ]
    );
    let catalog = integration_service::catalog::Catalog::load(None).unwrap();
    let names: Vec<&str> = data.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = catalog.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, expected, "one available item per catalog provider");
    assert!(data
        .iter()
        .all(|i| i["connected"] == false && i["status"].is_null()));
}

async fn list_shows_a_record_in_the_exact_shape_without_secrets(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let record = connected_github(&app, &token).await;
    let reply = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let item = &reply.body["data"][0];
    let created = item["created_at"].as_str().unwrap();
    let updated = item["updated_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(updated).is_ok());
    assert_eq!(
        item,
        &json!({
            "id": record.id.to_string(), "provider": "github", "organization_id": 1,
            "connected": true, "status": "ACTIVE", "permissions": ["repo", "read:user"],
            "config": {}, "sync_enabled": false, "sync_frequency": null,
            "webhook_url": format!("{}/api/integrations/github/webhook/{}", app.http_url, record.id),
            "created_at": created, "updated_at": updated,
            "display_name": "GitHub", "account_id": null, "account_name": null
        })
    );
    assert_eq!(reply.body["data"][1]["id"], "slack");
    for path in [
        "/api/integrations".to_string(),
        format!("/api/integrations/{}", record.id),
    ] {
        let text = app.get_as(&token, &path).await.text().await.unwrap();
        assert!(!text.contains("SECRET"), "a secret leaked: {text}");
    }
}

async fn every_route_requires_a_valid_session(app: TestApp) {
    let user = Uuid::new_v4();
    app.member_token(1, user, "OWNER").await;
    let expired = app.sign(
        Some(user.to_string()),
        -3600,
        Some("authenticated"),
        &app.jwt_secret,
    );
    let foreign = app.sign(
        Some(user.to_string()),
        3600,
        Some("authenticated"),
        "another-secret",
    );
    for (method, path, body) in routes("github") {
        let none = call(&app, method.clone(), &path, None, body.clone()).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(none.body, json!({"error": "Authentication required"}));
        assert_no_store(&none);
        for (token, details) in [
            (expired.as_str(), "the session has expired"),
            (foreign.as_str(), "the session signature is not valid"),
            ("garbage", "the session token is malformed"),
        ] {
            let reply = call(&app, method.clone(), &path, Some(token), body.clone()).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(
                reply.body,
                json!({"error": "Invalid or expired session", "details": details})
            );
        }
    }
    assert_eq!(
        integration::Entity::find().count(&app.db).await.unwrap(),
        0,
        "nothing was written"
    );
}

async fn members_are_forbidden_on_every_route(app: TestApp) {
    let member = app.member_token(1, Uuid::new_v4(), "MEMBER").await;
    for (method, path, body) in routes("github") {
        let reply = call(&app, method.clone(), &path, Some(&member), body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": "Forbidden", "details": "managing integrations requires the OWNER or ADMIN role"})
        );
    }
    assert_eq!(integration::Entity::find().count(&app.db).await.unwrap(), 0);
}

async fn org_id_cookie_of_a_foreign_organization_is_forbidden(app: TestApp) {
    let user = Uuid::new_v4();
    let token = app.member_token(1, user, "OWNER").await;
    app.owner(2).await;
    for (method, path, body) in routes("github") {
        let mut request = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(&token)
            .header(header::COOKIE, "org_id=2");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = reply(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            reply.body,
            json!({"error": "Forbidden", "details": "not a member of organization 2"})
        );
    }
    // A cookie naming one of the user's organizations selects it.
    app.member_token(3, user, "ADMIN").await;
    let reply = reply(
        app.http
            .get(app.url("/api/integrations"))
            .bearer_auth(&token)
            .header(header::COOKIE, "theme=dark; org_id=3"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"][0]["organization_id"], 3);
    let reply = reply_of(&app, &token, "x-organization-id", "nope").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body["error"], "Invalid organization id");
}

async fn reply_of(app: &TestApp, token: &str, header_name: &str, value: &str) -> Reply {
    reply(
        app.http
            .get(app.url("/api/integrations"))
            .bearer_auth(token)
            .header(header_name, value),
    )
    .await
}

async fn another_organizations_uuid_is_not_found(app: TestApp) {
    let (_, token_a) = app.owner(1).await;
    let (_, token_b) = app.owner(2).await;
    let record = connected_github(&app, &token_a).await;
    for (method, path, body) in routes(&record.id.to_string()).into_iter().skip(1) {
        let reply = call(&app, method.clone(), &path, Some(&token_b), body).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(reply.body, json!({"error": "Integration not found"}));
    }
    let after = integration::Entity::find_by_id(record.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.connected && !after.sync_enabled && after.access_token.is_some(),
        "row untouched"
    );
    // Organization B's own github is a different, still available, item.
    let reply = call(
        &app,
        Method::GET,
        "/api/integrations/github",
        Some(&token_b),
        None,
    )
    .await;
    assert_eq!(reply.body["data"]["id"], "github");
    assert_eq!(reply.body["data"]["organization_id"], 2);
}

async fn provider_name_and_uuid_address_the_same_integration(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let record = connected_github(&app, &token).await;
    let by_name = call(
        &app,
        Method::GET,
        "/api/integrations/github",
        Some(&token),
        None,
    )
    .await;
    let by_uuid = call(
        &app,
        Method::GET,
        &format!("/api/integrations/{}", record.id),
        Some(&token),
        None,
    )
    .await;
    let by_upper = call(
        &app,
        Method::GET,
        &format!("/api/integrations/{}", record.id.to_string().to_uppercase()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(by_name.status, StatusCode::OK);
    assert_eq!(by_name.body, by_uuid.body);
    assert_eq!(by_name.body, by_upper.body);
    assert_eq!(by_name.body["data"]["id"], record.id.to_string());
    let available = call(
        &app,
        Method::GET,
        "/api/integrations/slack",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(available.body["data"]["id"], "slack");
    assert_eq!(available.body["data"]["connected"], false);
    let unknown = call(
        &app,
        Method::GET,
        "/api/integrations/myspace",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"], "Integration not found");
    let known: Vec<String> = integration_service::catalog::Catalog::load(None)
        .unwrap()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(
        unknown.body["details"],
        format!(
            "unknown provider \"myspace\"; known providers: {}",
            known.join(", ")
        )
    );
    let missing = call(
        &app,
        Method::GET,
        &format!("/api/integrations/{}", Uuid::new_v4()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn both_session_cookie_forms_authenticate(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let plain = reply(
        app.http
            .get(app.url("/api/integrations"))
            .header(header::COOKIE, format!("sb-access-token={token}")),
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK);

    let session =
        json!({"access_token": token, "refresh_token": "r", "token_type": "bearer"}).to_string();
    let encoded = format!(
        "base64-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session.as_bytes())
    );
    let whole = reply(
        app.http
            .get(app.url("/api/integrations"))
            .header(header::COOKIE, format!("sb-proj-auth-token={encoded}")),
    )
    .await;
    assert_eq!(whole.status, StatusCode::OK);

    let (first, second) = encoded.split_at(encoded.len() / 2);
    let chunked = reply(app.http.get(app.url("/api/integrations")).header(
        header::COOKIE,
        format!("sb-proj-auth-token.1={second}; other=1; sb-proj-auth-token.0={first}"),
    ))
    .await;
    assert_eq!(chunked.status, StatusCode::OK);
    assert_eq!(chunked.body["data"][0]["organization_id"], 1);

    let forged = session.replace(&token[token.len() - 6..], "AAAAAA");
    let forged = reply(app.http.get(app.url("/api/integrations")).header(
        header::COOKIE,
        format!("sb-proj-auth-token={}", percent_encode(&forged)),
    ))
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn service_role_acts_on_the_named_organization(app: TestApp) {
    let (_, owner) = app.owner(7).await;
    connected_github(&app, &owner).await;
    let service = app.service_token();
    let reply = reply_of(&app, &service, "x-organization-id", "7").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"][0]["organization_id"], 7);
    assert_eq!(reply.body["data"][0]["connected"], true);
    let patched = reply_from(
        app.http
            .patch(app.url("/api/integrations/github"))
            .bearer_auth(&service)
            .header("x-organization-id", "7")
            .json(&json!({"syncEnabled": true})),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["data"]["sync_enabled"], true);

    let without = call(&app, Method::GET, "/api/integrations", Some(&service), None).await;
    assert_eq!(without.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        without.body,
        json!({"error": "Organization required", "details": "service_role callers name the organization in x-organization-id"})
    );
    let unknown = reply_of(&app, &service, "x-organization-id", "999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, json!({"error": "Organization not found"}));
}

async fn reply_from(request: reqwest::RequestBuilder) -> Reply {
    reply(request).await
}

async fn active_organization_is_the_highest_role_then_lowest_id(app: TestApp) {
    let user = Uuid::new_v4();
    app.member_token(2, user, "MEMBER").await;
    app.member_token(9, user, "ADMIN").await;
    let token = app.member_token(5, user, "ADMIN").await;
    let reply = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(
        reply.body["data"][0]["organization_id"], 5,
        "ADMIN ties go to the lowest id"
    );
    app.member_token(11, user, "OWNER").await;
    let reply = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(
        reply.body["data"][0]["organization_id"], 11,
        "OWNER beats ADMIN"
    );
    // Selecting the MEMBER organization explicitly is allowed, managing in it is not.
    let member = reply_of(&app, &token, "x-organization-id", "2").await;
    assert_eq!(member.status, StatusCode::FORBIDDEN);
    let nobody = app.user_token(Uuid::new_v4());
    let reply = call(&app, Method::GET, "/api/integrations", Some(&nobody), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.body,
        json!({"error": "Forbidden", "details": "the user belongs to no organization"})
    );
}

/// The list reads a user's memberships and records in one query: a user of two organizations
/// with records in both sees the active organization's records, never the other's.
async fn the_list_holds_the_active_organizations_records_only(app: TestApp) {
    let user = Uuid::new_v4();
    app.member_token(5, user, "ADMIN").await;
    let token = app.member_token(11, user, "OWNER").await;
    let mut records = Vec::new();
    for organization in [5, 11] {
        let record = integration_service::store::integrations::get_or_create(
            &app.db,
            organization,
            "github",
        )
        .await
        .unwrap();
        records.push(record.id.to_string());
    }
    let listed = |body: &Value| -> Vec<(String, i64)> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let id = item["id"].as_str().unwrap_or_default().to_string();
                (id, item["organization_id"].as_i64().unwrap_or_default())
            })
            .collect()
    };
    let owner = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(owner.status, StatusCode::OK);
    let items = listed(&owner.body);
    assert!(items.contains(&(records[1].clone(), 11)), "{items:?}");
    assert!(!items.iter().any(|(id, _)| id == &records[0]), "{items:?}");
    assert!(items.iter().all(|(_, organization)| *organization == 11));
    let admin = reply_of(&app, &token, "x-organization-id", "5").await;
    assert_eq!(admin.status, StatusCode::OK);
    let items = listed(&admin.body);
    assert!(items.contains(&(records[0].clone(), 5)), "{items:?}");
    assert!(!items.iter().any(|(id, _)| id == &records[1]), "{items:?}");
    let foreign = reply_of(&app, &token, "x-organization-id", "6").await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
}

async fn patch_refuses_bad_input_and_changes_nothing(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let first = call(
        &app,
        Method::PATCH,
        "/api/integrations/github",
        Some(&token),
        Some(json!({"config": {"keep": 1}})),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let before = first.body["data"].clone();
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        (
            r#"{"syncEnabled":"yes"}"#,
            StatusCode::BAD_REQUEST,
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            r#"{"syncFrequency":"3600"}"#,
            StatusCode::BAD_REQUEST,
            "invalid type: string \"3600\", expected an integer",
        ),
        (
            r#"{"syncFrequency":1.5}"#,
            StatusCode::BAD_REQUEST,
            "invalid value: floating point `1.5`, expected an integer",
        ),
        (
            r#"{"config":[1]}"#,
            StatusCode::BAD_REQUEST,
            "invalid type: sequence, expected a map",
        ),
        (
            r#"{"config":"x"}"#,
            StatusCode::BAD_REQUEST,
            "invalid type: string \"x\", expected a map",
        ),
        (
            r#"{"syncFrequency":5}"#,
            StatusCode::BAD_REQUEST,
            "syncFrequency: must be between 60 and 2592000 seconds",
        ),
        (
            r#"{"syncFrequency":99999999999}"#,
            StatusCode::BAD_REQUEST,
            "syncFrequency: must be between 60 and 2592000 seconds",
        ),
        (
            r#"{"sync":true}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `sync`",
        ),
        (
            r#"{"config":{"a":1}"#,
            StatusCode::BAD_REQUEST,
            "EOF while parsing",
        ),
        ("[]", StatusCode::BAD_REQUEST, "expected a JSON object"),
        ("", StatusCode::BAD_REQUEST, "EOF while parsing"),
    ];
    for (body, status, details) in cases {
        let reply = reply(
            app.http
                .patch(app.url("/api/integrations/github"))
                .bearer_auth(&token)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await;
        assert_eq!(reply.status, status, "{body}");
        assert_eq!(reply.body["error"], "Invalid request body", "{body}");
        assert!(
            reply.body["details"].as_str().unwrap().contains(details),
            "{body}: {}",
            reply.body["details"]
        );
    }
    let wrong_type = reply(
        app.http
            .patch(app.url("/api/integrations/github"))
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(r#"{"syncEnabled":true}"#),
    )
    .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        wrong_type.body,
        json!({"error": "Unsupported content type", "details": "expected application/json"})
    );
    let big = format!(r#"{{"config":{{"x":"{}"}}}}"#, "a".repeat(2 * 1024 * 1024));
    let too_large = reply(
        app.http
            .patch(app.url("/api/integrations/github"))
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(big),
    )
    .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body["error"], "Request body too large");
    let oversized_config = call(
        &app,
        Method::PATCH,
        "/api/integrations/github",
        Some(&token),
        Some(json!({"config": {"x": "a".repeat(70_000)}})),
    )
    .await;
    assert_eq!(oversized_config.status, StatusCode::BAD_REQUEST);
    let after = call(
        &app,
        Method::GET,
        "/api/integrations/github",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(after.body["data"], before, "nothing changed");
}

async fn patch_merges_config_and_accepts_snake_case(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let first = call(&app, Method::PATCH, "/api/integrations/slack", Some(&token),
        Some(json!({"config": {"channel": "#general", "nested": {"a": 1, "b": 2}, "drop": true}, "syncEnabled": true, "syncFrequency": 3600}))).await;
    assert_eq!(first.status, StatusCode::OK);
    let data = &first.body["data"];
    assert_eq!(
        data["config"],
        json!({"channel": "#general", "nested": {"a": 1, "b": 2}, "drop": true})
    );
    assert_eq!(data["sync_enabled"], true);
    assert_eq!(data["sync_frequency"], 3600);
    assert_eq!(data["provider"], "slack");
    assert_eq!(data["connected"], false);
    let id = data["id"].as_str().unwrap().to_string();
    assert!(
        Uuid::parse_str(&id).is_ok(),
        "a record was created for the provider"
    );

    let second = call(&app, Method::PATCH, &format!("/api/integrations/{id}"), Some(&token),
        Some(json!({"config": {"drop": null, "nested": {"b": null, "c": 3}, "list": [1, 2]}, "sync_enabled": false, "sync_frequency": 86400}))).await;
    assert_eq!(second.status, StatusCode::OK);
    let data = &second.body["data"];
    assert_eq!(
        data["config"],
        json!({"channel": "#general", "nested": {"a": 1, "c": 3}, "list": [1, 2]})
    );
    assert_eq!(data["sync_enabled"], false);
    assert_eq!(data["sync_frequency"], 86400);
    assert!(
        data["updated_at"].as_str().unwrap() >= first.body["data"]["updated_at"].as_str().unwrap()
    );

    let cleared = call(
        &app,
        Method::PATCH,
        "/api/integrations/slack",
        Some(&token),
        Some(json!({"syncFrequency": null})),
    )
    .await;
    assert_eq!(cleared.body["data"]["sync_frequency"], Value::Null);
    assert_eq!(
        cleared.body["data"]["config"]["channel"], "#general",
        "untouched fields stay"
    );
    let listed = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(listed.body["data"][1], cleared.body["data"]);
}

async fn delete_is_soft_idempotent_and_keeps_events(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let record = connected_github(&app, &token).await;
    call(
        &app,
        Method::PATCH,
        "/api/integrations/github",
        Some(&token),
        Some(json!({"config": {"org": "acme"}})),
    )
    .await;
    webhook_event::ActiveModel {
        id: Set(Uuid::new_v4()),
        integration_id: Set(record.id),
        event_type: Set("push".into()),
        delivery_id: Set(Some("d-1".into())),
        payload: Set(json!({"ref": "main"})),
        headers: Set(None),
        processed: Set(false),
        status: Set(webhook_event::EventStatus::Pending),
        retry_count: Set(0),
        received_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(&app.db)
    .await
    .unwrap();
    for _ in 0..2 {
        let reply = call(
            &app,
            Method::DELETE,
            "/api/integrations/github",
            Some(&token),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_no_store(&reply);
        assert_eq!(
            reply.body,
            json!({"success": true, "message": "Integration disconnected successfully"})
        );
    }
    let row = integration::Entity::find_by_id(record.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.connected);
    assert_eq!(row.status.map(|s| s.as_str()), Some("DISCONNECTED"));
    assert_eq!(
        (row.access_token, row.refresh_token, row.webhook_secret),
        (None, None, None)
    );
    assert_eq!(row.config, json!({"org": "acme"}), "settings stay");
    assert_eq!(row.permissions.unwrap().into_vec(), ["repo", "read:user"]);
    assert_eq!(
        webhook_event::Entity::find().count(&app.db).await.unwrap(),
        1,
        "events stay"
    );
    // By UUID too, and a provider never connected: success, and no row is created for it.
    let by_id = call(
        &app,
        Method::DELETE,
        &format!("/api/integrations/{}", record.id),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(by_id.status, StatusCode::OK);
    let never = call(
        &app,
        Method::DELETE,
        "/api/integrations/slack",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(never.status, StatusCode::OK);
    assert_eq!(integration::Entity::find().count(&app.db).await.unwrap(), 1);
    let listed = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(listed.body["data"][0]["status"], "DISCONNECTED");
    assert_eq!(listed.body["data"][0]["connected"], false);
}

async fn unknown_routes_and_methods_answer_json(app: TestApp) {
    let (_, token) = app.owner(1).await;
    let missing = call(&app, Method::GET, "/api/nothing", Some(&token), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"error": "Not found"}));
    assert_no_store(&missing);
    let put = call(
        &app,
        Method::PUT,
        "/api/integrations/github",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        put.headers.get(header::ALLOW).unwrap(),
        "GET, PATCH, DELETE"
    );
    assert_eq!(
        put.body,
        json!({"error": "Method not allowed", "details": "allowed: GET, PATCH, DELETE"})
    );
    let post = call(&app, Method::POST, "/api/integrations", Some(&token), None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let trailing = call(&app, Method::GET, "/api/integrations/", Some(&token), None).await;
    assert_eq!(
        trailing.status,
        StatusCode::OK,
        "a trailing slash is the same route"
    );
    let health = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.body,
        json!({"status": "ok", "gateway": "ok", "service": "SERVING"})
    );
}

async fn database_unavailable_answers_503(app: TestApp) {
    let (_, token) = app.owner(1).await;
    // The test's handle shares the service's pool: closing it is the database going away.
    app.db.close_by_ref().await.unwrap();
    let reply = call(&app, Method::GET, "/api/integrations", Some(&token), None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.body,
        json!({"error": "Database unavailable", "details": "retry later"})
    );
    assert_no_store(&reply);
}

#[tokio::test]
async fn gateway_answers_503_when_the_service_is_down() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = rest_gateway::config::GatewayConfig::from_lookup(|name| {
        (name == "INTEGRATION_SERVICE_URL").then(|| format!("http://127.0.0.1:{port}"))
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(rest_gateway::server::serve(
        rest_gateway::Gateway::new(config).unwrap(),
        listener,
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let reply = reply(
        client
            .get(format!("{url}/api/integrations"))
            .bearer_auth("x"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.body,
        json!({"error": "Integration service unavailable"})
    );
    let health = reply_from(client.get(format!("{url}/health"))).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["service"], "UNREACHABLE");
}
