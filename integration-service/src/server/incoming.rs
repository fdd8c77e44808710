//! The connections the gRPC server accepts: TCP on `GRPC_ADDR`, and — when
//! `GRPC_UNIX_SOCKET` names a path — a Unix domain socket beside it, for a gateway on the same
//! host (no loopback TCP stack between them). Both feed one server, so every service, layer
//! and limit is the same whichever way a call arrives.
//!
//! The socket file is created with mode 0660 (owner and group: the gateway's user) and a stale
//! one left by an earlier process is replaced; any other file at that path is an error.

use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::Path,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};
use tokio_stream::{wrappers::UnixListenerStream, Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// One accepted connection.
pub(super) enum Connection {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The server's incoming connections, whichever listener took them.
pub(super) type Incoming = Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>;

/// TCP connections (no Nagle: small HTTP/2 frames would wait for the peer's delayed ACK,
/// adding ~40 ms to answers), merged with the Unix socket's when there is one.
pub(super) fn incoming(tcp: TcpListener, unix: Option<UnixListener>) -> Incoming {
    let tcp = TcpIncoming::from(tcp)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(Connection::Tcp));
    match unix {
        Some(unix) => Box::pin(
            tcp.merge(UnixListenerStream::new(unix).map(|accepted| accepted.map(Connection::Unix))),
        ),
        None => Box::pin(tcp),
    }
}

/// Binds the Unix socket at `path` (0660), replacing a socket file an earlier process left.
pub(super) fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

impl Connected for Connection {
    /// TCP connections keep their addresses (`Request::remote_addr`); a Unix socket's peer
    /// has none.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Tcp(stream) => stream.connect_info(),
            Self::Unix(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(stream) => stream.is_write_vectored(),
            Self::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Self::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_other_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("incoming-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("service.sock");
        let first = bind_unix(&path).unwrap();
        drop(first);
        // The file of the dropped listener is still there: a restart replaces it.
        let _second = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(bind_unix(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
