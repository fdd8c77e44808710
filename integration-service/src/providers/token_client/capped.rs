//! Token responses read with a cap: the `oauth2` crate's HTTP client over the shared reqwest
//! client, and the body reader both token paths use.

use super::super::http_client;

/// Largest token response read: real ones are well under 16 KiB; a provider (or whoever
/// answers at its URL) streaming more is refused rather than buffered.
pub(crate) const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// Reads a response body of at most `MAX_TOKEN_RESPONSE_BYTES`.
pub(super) async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, &'static str> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_TOKEN_RESPONSE_BYTES as u64)
    {
        return Err("token response too large");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "unreadable token response")?
    {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err("token response too large");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `oauth2` crate's HTTP client, over the shared reqwest client, with a capped body.
pub(super) async fn capped_http(
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, CappedHttpError> {
    let (parts, body) = request.into_parts();
    let response = http_client()
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|_| CappedHttpError("token endpoint unreachable"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_capped(response).await.map_err(CappedHttpError)?;
    let mut answer = oauth2::HttpResponse::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct CappedHttpError(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every connection with `head` and `body_len` bytes, chunked or not.
    async fn oversized_server(chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = vec![b'a'; MAX_TOKEN_RESPONSE_BYTES + 1];
                let head = if chunked {
                    format!(
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                        body.len()
                    )
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                };
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                if chunked {
                    let _ = stream.write_all(b"\r\n0\r\n\r\n").await;
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn token_responses_are_read_with_a_cap() {
        for chunked in [false, true] {
            let url = oversized_server(chunked).await;
            let response = http_client().post(&url).send().await.unwrap();
            assert_eq!(
                read_capped(response).await.unwrap_err(),
                "token response too large"
            );
        }
    }
}
