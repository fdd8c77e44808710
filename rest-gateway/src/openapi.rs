//! `GET /openapi.json`: the OpenAPI 3.1 document of every route of [`crate::router::ROUTES`],
//! written by hand (`rest-gateway/openapi.json`, reviewed like code) and embedded at compile
//! time, so the binary always serves the document of its own routes.
//!
//! Invariant: every route and method of the table is documented — the gateway's test
//! `openapi::every_route_is_documented` derives the list from the table itself, and CI's
//! schemathesis run (`.ci/schemathesis.sh`) checks the live gateway against the document.

use http::StatusCode;

use crate::http::{raw, HttpResponse};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /openapi.json`.
pub fn document() -> HttpResponse {
    raw(
        StatusCode::OK,
        "application/json",
        bytes::Bytes::from_static(DOCUMENT.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use oas3::spec::ParameterIn;
    use serde_json::Value;

    use super::DOCUMENT;
    use crate::router::ROUTES;

    fn spec() -> oas3::Spec {
        oas3::from_json(DOCUMENT).expect("openapi.json is an OpenAPI 3.1 document")
    }

    /// `/api/integrations/:id/events/:eventId` → `/api/integrations/{id}/events/{eventId}`.
    fn openapi_path(template: &str) -> String {
        template
            .split('/')
            .map(|segment| match segment.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => segment.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn placeholders(template: &str) -> BTreeSet<String> {
        template
            .split('/')
            .filter_map(|s| s.strip_prefix(':'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let spec = spec();
        let version = spec.validate_version().expect("a supported version");
        assert_eq!((version.major, version.minor), (3, 1));
        // Every operation's parameters and request body resolve through their `$ref`s.
        for (path, method, operation) in spec.operations() {
            operation
                .parameters(&spec)
                .unwrap_or_else(|e| panic!("{method} {path}: parameters: {e}"));
            operation
                .request_body(&spec)
                .unwrap_or_else(|e| panic!("{method} {path}: request body: {e}"));
            assert!(
                !operation.responses(&spec).is_empty(),
                "{method} {path} documents no response"
            );
            assert!(operation.operation_id.is_some(), "{method} {path}");
        }
    }

    /// Every `$ref` of the document points at something that exists.
    #[test]
    fn every_reference_resolves() {
        fn walk(value: &Value, root: &Value, refs: &mut usize) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').expect("a local reference");
                        assert!(root.pointer(pointer).is_some(), "dangling $ref {target}");
                        *refs += 1;
                    }
                    map.values().for_each(|v| walk(v, root, refs));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, root, refs)),
                _ => {}
            }
        }
        let root: Value = serde_json::from_str(DOCUMENT).unwrap();
        let mut refs = 0;
        walk(&root, &root, &mut refs);
        assert!(refs > 50, "only {refs} references");
    }

    /// The route table is the source: a route or method added to the router without its
    /// operation fails here, and so does an operation the router does not answer.
    #[test]
    fn every_route_is_documented() {
        let spec = spec();
        let mut routed = BTreeSet::new();
        for route in ROUTES {
            let path = openapi_path(route.template);
            for method in route.methods() {
                let method: http::Method = method.parse().unwrap();
                let operation = spec
                    .operation(&method, &path)
                    .unwrap_or_else(|| panic!("{method} {path} is routed but not documented"));
                let documented: BTreeSet<String> = operation
                    .parameters(&spec)
                    .unwrap()
                    .into_iter()
                    .filter(|p| p.location == ParameterIn::Path)
                    .map(|p| p.name)
                    .collect();
                assert_eq!(
                    documented,
                    placeholders(route.template),
                    "{method} {path}: path parameters"
                );
                routed.insert((path.clone(), method.to_string()));
            }
        }
        let documented: BTreeSet<(String, String)> = spec
            .operations()
            .map(|(path, method, _)| (path, method.to_string()))
            .collect();
        let phantom: Vec<_> = documented.difference(&routed).collect();
        assert!(phantom.is_empty(), "documented, not routed: {phantom:?}");
    }

    /// Session routes declare the session schemes; provider-facing routes declare none.
    #[test]
    fn security_is_declared_per_operation() {
        let spec = spec();
        let schemes = spec.components.as_ref().unwrap().security_schemes.clone();
        for name in ["bearerAuth", "sbAccessToken", "supabaseSsrCookie"] {
            assert!(schemes.contains_key(name), "{name}");
        }
        for (path, method, operation) in spec.operations() {
            // Providers' redirects and deliveries authenticate by state or signature.
            let provider_facing = path.starts_with("/api/auth/")
                || path.ends_with("/callback")
                || operation
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("receive"));
            let public = provider_facing || !path.starts_with("/api/");
            let security = operation.security.len();
            if public {
                assert_eq!(security, 0, "{method} {path} needs no session");
            } else {
                assert_eq!(security, 3, "{method} {path}: bearer or either cookie");
            }
        }
    }
}
