//! The public listener under hostile clients, on real sockets: silent and idle connections
//! are closed, the connection cap makes room by closing the oldest idle one, trickled bodies
//! are refused, a graceful shutdown is not held by slow clients, oversized heads get a JSON
//! 431 and a dead or slow service a 503/504. These need no database: the gateway alone runs,
//! in front of a service address that refuses or never answers.

use std::time::{Duration, Instant};

use rest_gateway::{config::GatewayConfig, Gateway};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

struct TestGateway {
    address: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().map(|tx| tx.send(()));
        self.server.await.unwrap().unwrap();
        started.elapsed()
    }
}

/// A gateway with `vars` (and an upstream `service_url`) on port 0.
async fn spawn_gateway(service_url: &str, vars: &[(&str, &str)]) -> TestGateway {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("INTEGRATION_SERVICE_URL".into(), service_url.to_string())])
        .collect();
    let config = GatewayConfig::from_lookup(|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(rest_gateway::server::serve(
        Gateway::new(config).unwrap(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    TestGateway {
        address,
        stop: Some(tx),
        server,
    }
}

/// A service address where nothing listens (connection refused).
async fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// Reads until the peer closes; the time it took, or `None` if still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some((started.elapsed(), seen))
}

async fn raw_request(address: &str, request: impl AsRef<[u8]>) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_ref()).await.unwrap();
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let gateway = spawn_gateway(
        &refused_address().await,
        &[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut silent = TcpStream::connect(&gateway.address).await.unwrap();
    let mut partial = TcpStream::connect(&gateway.address).await.unwrap();
    partial
        .write_all(b"GET /api/integrations HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (elapsed, _) = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection is closed");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    let (elapsed, _) = closed_within(&mut partial, Duration::from_secs(5))
        .await
        .expect("a half-sent head is closed");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let gateway = spawn_gateway(
        &refused_address().await,
        &[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut stream = TcpStream::connect(&gateway.address).await.unwrap();
    stream
        .write_all(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (elapsed, answer) = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed after being idle");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connection_makes_room() {
    let gateway = spawn_gateway(
        &refused_address().await,
        &[
            ("HTTP_MAX_CONNECTIONS", "2"),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "30"),
        ],
    )
    .await;
    let mut oldest = TcpStream::connect(&gateway.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _second = TcpStream::connect(&gateway.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = raw_request(
        &gateway.address,
        "GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    closed_within(&mut oldest, Duration::from_secs(2))
        .await
        .expect("the oldest idle connection was closed");
    gateway.stop().await;
}

#[tokio::test]
async fn a_trickled_body_is_refused_with_408() {
    let gateway = spawn_gateway(
        &refused_address().await,
        &[
            ("HTTP_BODY_GRACE_SECS", "1"),
            ("HTTP_BODY_MIN_BYTES_PER_SEC", "1000"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(&gateway.address).await.unwrap();
    stream
        .write_all(
            b"PATCH /api/integrations/github HTTP/1.1\r\nhost: x\r\nauthorization: Bearer x\r\n\
              content-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"config\"",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("Request body too slow"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    gateway.stop().await;
}

/// More than hyper's default 100 header fields still get our answer (JSON, `Cache-Control`),
/// not hyper's bare 431; past our head-size limit the answer is our own JSON 431.
#[tokio::test]
async fn many_header_fields_get_a_json_answer() {
    let gateway = spawn_gateway(&refused_address().await, &[]).await;
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = raw_request(
        &gateway.address,
        &format!("GET /nowhere HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("cache-control: no-store"), "{answer}");
    assert!(answer.contains(r#"{"error":"Not found"}"#), "{answer}");
    let big: String = (0..900)
        .map(|i| format!("x-h{i}: {}\r\n", "v".repeat(80)))
        .collect();
    let answer = raw_request(
        &gateway.address,
        &format!("GET /nowhere HTTP/1.1\r\nhost: x\r\n{big}connection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("Request header fields too large"),
        "{answer}"
    );
    gateway.stop().await;
}

/// A management request without credentials is answered 401 before a byte of its body is
/// read: anonymous clients cannot make the gateway hold their bodies.
#[tokio::test]
async fn anonymous_management_bodies_are_refused_before_reading() {
    let gateway = spawn_gateway(&refused_address().await, &[]).await;
    for (method, path) in [
        ("PATCH", "/api/integrations/github"),
        ("PUT", "/api/integrations/linear/webhook"),
        ("POST", "/api/integrations/github/webhook/rotate"),
        ("POST", "/api/integrations/asana/webhook/handshake"),
        ("POST", "/api/integrations/github/callback"),
    ] {
        let mut stream = TcpStream::connect(&gateway.address).await.unwrap();
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                     content-length: 100000\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let (_, answer) = closed_within(&mut stream, Duration::from_secs(3))
            .await
            .expect("answered before any body byte was sent");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{method} {path}: {answer}"
        );
        assert!(answer.contains("Authentication required"), "{answer}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn slow_clients_do_not_hold_a_graceful_shutdown() {
    let gateway = spawn_gateway(
        &refused_address().await,
        &[
            ("HTTP_SHUTDOWN_TIMEOUT_SECS", "1"),
            ("HTTP_BODY_GRACE_SECS", "60"),
        ],
    )
    .await;
    let _silent = TcpStream::connect(&gateway.address).await.unwrap();
    let mut slow_body = TcpStream::connect(&gateway.address).await.unwrap();
    slow_body
        .write_all(
            b"PATCH /api/integrations/github HTTP/1.1\r\nhost: x\r\n\
              content-type: application/json\r\ncontent-length: 100000\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = gateway.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    closed_within(&mut slow_body, Duration::from_secs(1))
        .await
        .expect("closed at shutdown");
}

#[tokio::test]
async fn an_oversized_head_is_a_json_431() {
    let gateway = spawn_gateway(&refused_address().await, &[]).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{}/api/integrations", gateway.address))
        .header("authorization", format!("Bearer {}", "a".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Request header fields too large");
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_service_is_503_and_a_silent_one_504() {
    let gateway = spawn_gateway(&refused_address().await, &[]).await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{}/api/integrations", gateway.address))
        .header("authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Integration service unavailable");
    gateway.stop().await;

    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let gateway = spawn_gateway(&silent_url, &[("UPSTREAM_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let response = client
        .get(format!("http://{}/api/integrations", gateway.address))
        .header("authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Integration service timed out");
    assert!(started.elapsed() < Duration::from_secs(5));
    gateway.stop().await;
    holder.abort();
}

#[tokio::test]
async fn an_unreadable_organization_selector_is_400() {
    let gateway = spawn_gateway(&refused_address().await, &[]).await;
    for (name, value) in [
        ("x-organization-id", &b"2\xff"[..]),
        ("cookie", &b"sb-access-token=t; org_id=2\xff"[..]),
    ] {
        let head = format!(
            "DELETE /api/integrations/github HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
             authorization: Bearer t\r\n{name}: "
        );
        let request = [head.as_bytes(), value, b"\r\n\r\n"].concat();
        let answer = raw_request(&gateway.address, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{name}: {answer}");
        assert!(answer.contains("Invalid organization"), "{answer}");
    }
    gateway.stop().await;
}
