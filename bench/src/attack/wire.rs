//! The attacker's side of the wire: its own loopback address, its connections, and the status
//! of an answer read off a raw connection (the scenarios speak HTTP/1.1 by hand, to be slow,
//! huge or malformed on purpose).

use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::outcome::response_status;

/// The attacker's address: 127.0.0.2 (every 127/8 address is loopback on Linux), so the
/// gateway tells it from the legitimate tenant's 127.0.0.1 as it would tell a botnet from
/// GitHub — the per-address share of the budgets is part of what is tried.
pub const ATTACKER_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

pub async fn connect_from_attacker_address(port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((ATTACKER_ADDRESS, 0).into())?;
    socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await
}

/// The status of the response head read from `reader`; `None` when the connection ends (or
/// fails) before a whole head.
pub async fn read_status(reader: &mut (impl AsyncReadExt + Unpin)) -> Option<u16> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") || answer.len() > 16 * 1024 {
                    return response_status(&answer);
                }
            }
        }
    }
}
