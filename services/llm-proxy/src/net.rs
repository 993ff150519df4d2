//! Listening sockets for proxies and their test double.

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` for serving: `TCP_NODELAY` on the listener, which accepted connections
/// inherit on Linux, so small SSE chunks are not held back by Nagle's algorithm.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    let resolved = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let socket = if resolved.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(resolved).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {addr}: the address is already in use")
        } else {
            anyhow::Error::new(err).context(format!("cannot listen on {addr}"))
        }
    })?;
    Ok(socket.listen(1024)?)
}
