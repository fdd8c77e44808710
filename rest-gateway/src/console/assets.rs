//! The console's stylesheet and script, embedded in the binary at compile time (no build
//! step, nothing fetched from another origin), served under `/console/assets/`.

use http::StatusCode;

use crate::{error::GatewayError, http::HttpResponse};

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// `GET /console/assets/{name}`: the two files, with the console's headers.
pub(super) fn serve(name: &str) -> Result<HttpResponse, GatewayError> {
    let (content_type, body) = match name {
        "console.css" => ("text/css; charset=utf-8", STYLESHEET),
        "console.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return Err(GatewayError::NotFound),
    };
    let mut response = crate::http::raw(StatusCode::OK, content_type, body);
    super::layout::security_headers(response.headers_mut());
    Ok(response)
}
