//! `GET /openapi.json` on the real gateway: served as JSON, the OpenAPI 3.1 document embedded
//! in the binary; and the live router answers every documented path with exactly the
//! documented methods (an undocumented method is a 405 whose `Allow` lists them).

use std::collections::BTreeSet;

use reqwest::{header, Method, StatusCode};
use test_support::{dual_test, TestApp};

dual_test!(
    the_document_is_served_as_json,
    every_documented_path_allows_exactly_its_documented_methods,
);

async fn the_document_is_served_as_json(app: TestApp) {
    let response = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert!(response.headers().contains_key("x-request-id"));
    let text = response.text().await.unwrap();
    assert_eq!(text, rest_gateway::openapi::DOCUMENT);
    let spec = oas3::from_json(&text).expect("an OpenAPI document");
    let version = spec.validate_version().unwrap();
    assert_eq!((version.major, version.minor), (3, 1));
    assert!(spec.operation(&Method::GET, "/openapi.json").is_some());
}

async fn every_documented_path_allows_exactly_its_documented_methods(app: TestApp) {
    let text = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).unwrap();
    let paths = spec.paths.as_ref().unwrap();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, item) in paths {
        let documented: BTreeSet<String> = item
            .methods()
            .into_iter()
            .map(|(method, _)| method.to_string())
            .collect();
        let concrete = path
            .replace("{id}", "github")
            .replace("{provider}", "gitlab")
            .replace("{eventId}", "0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
            .replace("{integration_id}", "0b7e3e4a-1c2d-4e5f-8a9b-0c1d2e3f4a5c");
        let response = app
            .http
            .request(Method::OPTIONS, app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "OPTIONS {concrete}"
        );
        let allow: BTreeSet<String> = response.headers()[header::ALLOW]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_string)
            .collect();
        assert_eq!(allow, documented, "{path}");
    }
}
