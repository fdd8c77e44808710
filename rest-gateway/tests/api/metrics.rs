//! `GET /metrics` after real traffic, parsed with a Prometheus text-format parser: request
//! counts and durations by route template, method and status; no id in any label.

use reqwest::StatusCode;
use test_support::{dual_test, TestApp};

dual_test!(metrics_count_requests_by_route_template,);

async fn metrics_count_requests_by_route_template(app: TestApp) {
    let (_, owner) = app.owner(3).await;
    for _ in 0..3 {
        let response = app
            .http
            .get(app.url("/api/integrations/github"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let missing = app
        .http
        .get(app.url("/api/integrations/00000000-0000-4000-8000-000000000000"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
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
