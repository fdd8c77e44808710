//! TCP_NODELAY on PostgreSQL connections.
//!
//! sqlx 0.9.0 stopped disabling Nagle's algorithm on its sockets (sqlx#4335, fixed upstream by
//! sqlx#4336, not yet released). A message larger than the socket's send buffer then leaves a
//! tail that waits for the server's delayed ACK: ~40 ms on a multi-row INSERT of webhook
//! payloads. sqlx does not expose its socket, so when the pool opens a connection we set
//! TCP_NODELAY on the process's TCP sockets (ours all want it: tonic, hyper and reqwest set it
//! themselves). Remove this module when sqlx sets it again.

use sea_orm::ConnectOptions;

/// Makes every connection the pool opens send without Nagle's delay.
pub fn enable_on_new_connections(options: &mut ConnectOptions) {
    options.map_sqlx_postgres_pool_opts(|pool| {
        pool.after_connect(|_connection, _meta| {
            Box::pin(async {
                set_nodelay_on_tcp_sockets();
                Ok(())
            })
        })
    });
}

/// Sets TCP_NODELAY on every TCP socket of this process; other descriptors are left alone.
#[cfg(target_os = "linux")]
fn set_nodelay_on_tcp_sockets() {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` is a descriptor of this process, borrowed for two socket options and
        // not kept. Were it closed and reused meanwhile, the worst outcome is TCP_NODELAY on
        // another TCP socket of ours, which they all use already.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        if socket.tcp_nodelay().is_ok_and(|on| !on) {
            let _ = socket.set_tcp_nodelay(true);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nodelay_on_tcp_sockets() {}
