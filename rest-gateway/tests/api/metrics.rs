//! Both metrics endpoints after real traffic, parsed with a Prometheus text-format parser: the
//! gateway's requests by route template, method and status; the service's gRPC calls, webhook
//! outcomes, group commits, leases, backlog, token refreshes and provider calls. No id in any
//! label.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use integration_service::webhooks::signature::github_signature;
use integrations_proto::v1::{
    o_auth_service_client::OAuthServiceClient, webhook_service_client::WebhookServiceClient,
    GetAccessTokenRequest, MarkProcessedRequest, RecordErrorRequest, SubscribeEventsRequest,
};
use promql_parser::{
    parser::Expr,
    util::{walk_expr, ExprVisitor},
};
use reqwest::{header, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use test_support::{
    dual_db_test, dual_test,
    fake_provider::{FakeProvider, FakeStyle},
    oauth_flow::connect,
    scrape::Scrape,
    spawn_app_with_env, Db, TestApp,
};

dual_test!(metrics_count_requests_by_route_template,);

async fn metrics_count_requests_by_route_template(app: TestApp) {
    let (_, owner) = app.owner(3).await;
    for _ in 0..3 {
        let response = app.get_as(&owner, "/api/integrations/github").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let missing = app
        .get_as(
            &owner,
            "/api/integrations/00000000-0000-4000-8000-000000000000",
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Not on the public port: it shows the live webhook budgets.
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let response = app.http.get(&app.gateway_metrics_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");

    let count = |status: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "http_requests_total")
            .filter(|s| s.labels.get("route") == Some("/api/integrations/:id"))
            .filter(|s| s.labels.get("method") == Some("GET"))
            .filter(|s| s.labels.get("status") == Some(status))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("http_requests_total is not a counter: {other:?}"),
            })
            .sum()
    };
    // Other tests of this process share the recorder: at least ours are counted.
    assert!(count("200") >= 3.0, "{text}");
    assert!(count("404") >= 1.0, "{text}");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "http_request_duration_seconds"
                && s.labels.get("route") == Some("/api/integrations/:id")
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "{text}"
    );
    // Bounded labels: no UUID, no provider name chosen by a client.
    assert!(!text.contains("00000000-0000-4000-8000-000000000000"));
    assert!(!text.contains("route=\"/api/integrations/github\""));
}

dual_db_test!(both_endpoints_count_real_traffic);

/// Real traffic through the gateway and over gRPC — an OAuth connection, signed, duplicated,
/// forged and unsigned deliveries, a token refresh, a consumer that fails once then
/// acknowledges, a disconnect — then both endpoints are scraped and parsed: the service's
/// series moved by exactly what happened (its recorder is its own), the gateway's too.
async fn both_endpoints_count_real_traffic(kind: Db) {
    let fake = FakeProvider::start(FakeStyle::Github).await;
    // Tokens that live one second: by the time GetAccessToken asks, it refreshes.
    fake.set_expires_in(Some(1));
    let mut vars = fake.env("GITHUB");
    vars.push(("METRICS_BACKLOG_INTERVAL_SECS".into(), "1".into()));
    let Some(app) = spawn_app_with_env(kind, &vars).await else {
        return;
    };
    let (_, owner) = app.owner(41).await;
    connect(&app, &owner, "github").await;
    let settings: Value = app
        .get_as(&owner, "/api/integrations/github/webhook")
        .await
        .json()
        .await
        .unwrap();
    let url = settings["data"]["url"].as_str().unwrap().to_string();
    let secret = settings["data"]["secret"].as_str().unwrap().to_string();
    let integration_id = url.rsplit('/').next().unwrap().to_string();

    let body = json!({"ref": "refs/heads/main"}).to_string();
    let deliver = |signature: Option<String>| {
        let mut request = app
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "5c4bd1a2-0000-4000-8000-00000000c0de")
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send()
    };
    let signed = github_signature(secret.as_bytes(), body.as_bytes());
    for (signature, status) in [
        (Some(signed.clone()), StatusCode::OK),
        (Some(signed), StatusCode::OK),
        (
            Some(github_signature(b"forged", body.as_bytes())),
            StatusCode::UNAUTHORIZED,
        ),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(deliver(signature).await.unwrap().status(), status);
    }

    let service = app.service_token();
    fn as_service<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata.insert("x-organization-id", "41".parse().unwrap());
        request
    }
    let mut oauth = OAuthServiceClient::connect(app.grpc_url.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    oauth
        .get_access_token(as_service(
            &service,
            GetAccessTokenRequest {
                id: "github".into(),
            },
        ))
        .await
        .expect("a refreshed token");

    let mut webhooks = WebhookServiceClient::connect(app.grpc_url.clone())
        .await
        .unwrap();
    let mut stream = webhooks
        .subscribe_events(as_service(
            &service,
            SubscribeEventsRequest {
                provider: Some("github".into()),
                lease_seconds: Some(30),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut next_event = async || {
        tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream open")
    };
    let first = next_event().await;
    webhooks
        .record_error(as_service(
            &service,
            RecordErrorRequest {
                event_id: first.id.clone(),
                error: "consumer busy".into(),
            },
        ))
        .await
        .unwrap();
    // Retried after about a second: the same event again.
    let again = next_event().await;
    assert_eq!(again.id, first.id);
    webhooks
        .mark_processed(as_service(
            &service,
            MarkProcessedRequest {
                event_id: again.id.clone(),
            },
        ))
        .await
        .unwrap();
    drop(stream);

    let disconnected = app.delete_as(&owner, "/api/integrations/github").await;
    assert_eq!(disconnected.status(), StatusCode::OK);

    // The backlog gauges and the revocation (in the background) land within a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let scrape = loop {
        let scrape = Scrape::fetch(&app.http, &app.service_metrics_url).await;
        let settled = scrape.sum("webhook_events", &[("status", "PROCESSED")]) == 1.0
            && scrape.sum(
                "provider_requests_total",
                &[("endpoint", "revoke"), ("outcome", "ok")],
            ) == 1.0;
        if settled || tokio::time::Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = &scrape.text;
    let delivered = |outcome: &str| {
        scrape.sum(
            "webhook_deliveries_total",
            &[("provider", "github"), ("outcome", outcome)],
        )
    };
    assert_eq!(delivered("accepted"), 1.0, "{text}");
    assert_eq!(delivered("duplicate"), 1.0, "{text}");
    // The forged one and the unsigned one, both refused in `receive` (small bodies are read and
    // sent without an admission call).
    assert_eq!(delivered("invalid_signature"), 2.0, "{text}");
    assert_eq!(
        scrape.sum("webhook_ingest_batch_rows", &[]),
        2.0,
        "two rows written (the duplicate resolved by the unique key): {text}"
    );
    assert_eq!(
        scrape.sum(
            "webhook_ingest_commit_duration_seconds",
            &[("outcome", "committed")]
        ),
        2.0,
        "{text}"
    );
    let calls = |method: &str, code: &str| {
        scrape.sum(
            "grpc_server_handled_total",
            &[("grpc_method", method), ("grpc_code", code)],
        )
    };
    assert_eq!(calls("GetAccessToken", "OK"), 1.0, "{text}");
    assert_eq!(calls("ReceiveWebhook", "OK"), 2.0, "{text}");
    assert_eq!(calls("ReceiveWebhook", "Unauthenticated"), 2.0, "{text}");
    assert_eq!(calls("AdmitWebhook", "Unauthenticated"), 0.0, "{text}");
    assert_eq!(calls("RecordError", "OK"), 1.0, "{text}");
    assert_eq!(calls("MarkProcessed", "OK"), 1.0, "{text}");
    assert_eq!(
        scrape.sum(
            "grpc_server_handling_seconds",
            &[("grpc_method", "GetAccessToken")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        scrape.sum(
            "token_refreshes_total",
            &[("provider", "github"), ("outcome", "refreshed")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        scrape.sum("token_refresh_duration_seconds", &[("provider", "github")]),
        1.0,
        "{text}"
    );
    for endpoint in ["token", "refresh", "revoke"] {
        assert_eq!(
            scrape.sum(
                "provider_requests_total",
                &[
                    ("provider", "github"),
                    ("endpoint", endpoint),
                    ("outcome", "ok")
                ]
            ),
            1.0,
            "{endpoint}: {text}"
        );
    }
    assert_eq!(scrape.sum("webhook_event_leases_total", &[]), 2.0, "{text}");
    assert_eq!(
        scrape.sum("webhook_event_redeliveries_total", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(
        scrape.sum("webhook_events", &[("status", "PROCESSED")]),
        1.0,
        "{text}"
    );
    assert_eq!(scrape.sum("webhook_events", &[("status", "PENDING")]), 0.0);
    assert_eq!(
        scrape.sum("webhook_oldest_pending_event_age_seconds", &[]),
        0.0,
        "nothing waits: {text}"
    );
    // Bounded labels: no id, no tenant.
    assert!(!text.contains(&integration_id), "{text}");
    assert!(!text.contains("5c4bd1a2"), "{text}");
    assert!(!text.contains("organization"), "{text}");

    let gateway = Scrape::fetch(&app.http, &app.gateway_metrics_url).await;
    let mut names = scrape.names();
    names.extend(gateway.names());
    check_alert_rules(&names);
    assert!(
        gateway.sum(
            "http_requests_total",
            &[
                (
                    "route",
                    "/api/integrations/:provider/webhook/:integration_id"
                ),
                ("status", "401")
            ]
        ) >= 2.0,
        "{}",
        gateway.text
    );
    assert!(gateway.has("webhook_bytes_in_flight"), "{}", gateway.text);
    assert!(
        gateway.sum("webhook_bytes_in_flight_limit", &[]) > 0.0,
        "{}",
        gateway.text
    );
}

/// `ops/alerts.yml`, as `promtool check rules` would read it (Debian's `prometheus` package is
/// ~100 MB for that one tool): the rule-file shape, every expression parsed by a PromQL parser,
/// every `for` a duration, a severity and a summary on every alert — and every metric an
/// expression selects present in `scraped` (`up` is Prometheus' own).
fn check_alert_rules(scraped: &BTreeSet<String>) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RuleFile {
        groups: Vec<Group>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Group {
        name: String,
        rules: Vec<Rule>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        alert: String,
        expr: String,
        #[serde(rename = "for")]
        pending: Option<String>,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    }
    struct Selected(BTreeSet<String>);
    impl ExprVisitor for Selected {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|vs| vs.name.clone()) {
                self.0.insert(name);
            }
            Ok(true)
        }
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/alerts.yml");
    let text = std::fs::read_to_string(path).expect("ops/alerts.yml");
    let file: RuleFile = serde_yaml_ng::from_str(&text).expect("a Prometheus rule file");
    let mut alerts = BTreeSet::new();
    let mut selected = Selected(BTreeSet::new());
    assert!(!file.groups.is_empty());
    for group in &file.groups {
        assert!(
            !group.name.is_empty() && !group.rules.is_empty(),
            "{}",
            group.name
        );
        for rule in &group.rules {
            assert!(alerts.insert(rule.alert.clone()), "{} twice", rule.alert);
            let expr = promql_parser::parser::parse(&rule.expr)
                .unwrap_or_else(|e| panic!("{}: {e}", rule.alert));
            walk_expr(&mut selected, &expr).unwrap();
            if let Some(pending) = &rule.pending {
                promql_parser::util::parse_duration(pending)
                    .unwrap_or_else(|e| panic!("{}: for {pending}: {e}", rule.alert));
            }
            assert!(
                matches!(
                    rule.labels.get("severity").map(String::as_str),
                    Some("page" | "ticket")
                ),
                "{}: severity page or ticket",
                rule.alert
            );
            assert!(
                rule.annotations
                    .get("summary")
                    .is_some_and(|s| !s.is_empty()),
                "{}: a summary",
                rule.alert
            );
        }
    }
    let unknown: Vec<&String> = selected
        .0
        .iter()
        .filter(|name| *name != "up" && !scraped.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "alert rules use metrics no endpoint exports: {unknown:?}"
    );
    assert!(selected.0.len() >= 10, "{:?}", selected.0);
}
