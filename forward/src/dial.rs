//! Dialing one fixed address, with socket buffers of a bounded size when asked.
//!
//! A TCP socket left alone grows its buffers with the kernel's autotuning, up to the host's
//! `tcp_rmem`/`tcp_wmem` ceilings (32 MiB on some hosts): what one slow peer can pin then depends
//! on the machine. A bounded socket holds at most twice the size asked for (the kernel doubles
//! it for its bookkeeping), whatever the host's settings.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use tokio::net::{lookup_host, TcpSocket, TcpStream};

/// The socket buffer size both ends use by default: 256 KiB (the kernel grants 512 KiB) keeps a
/// connection at several GB/s at an in-cluster round trip of 0.1–0.5 ms, while a peer that stops
/// reading pins at most 1 MiB of one socket instead of the host's autotuning ceiling.
pub const DEFAULT_SOCKET_BUFFER: u32 = 256 * 1024;

/// Connects to one `HOST:PORT`, giving up after a timeout.
#[derive(Debug, Clone)]
pub struct Dialer {
    address: Arc<str>,
    authority: Authority,
    connect_timeout: Duration,
    socket_buffer: Option<u32>,
}

impl Dialer {
    /// A dialer of `address` (`HOST:PORT`) that gives up connecting after `connect_timeout`;
    /// its sockets' buffers are autotuned unless [`Dialer::socket_buffer`] bounds them.
    pub fn new(address: &str, connect_timeout: Duration) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            authority: address.parse()?,
            address: address.into(),
            connect_timeout,
            socket_buffer: None,
        })
    }

    /// Bounds the send and receive buffers of every socket this dialer opens to `bytes` each
    /// (see [`bound_socket_buffers`]).
    pub fn socket_buffer(mut self, bytes: u32) -> Self {
        self.socket_buffer = Some(bytes);
        self
    }

    /// Where it connects.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The address as a URI authority.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// A connection with `TCP_NODELAY` set, to the first of the address's resolved addresses that
    /// accepts; an error of kind `TimedOut` after the connect timeout.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let connect = async {
            let mut last_error = None;
            for address in lookup_host(&*self.address).await? {
                match self.connect_to(address).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => last_error = Some(error),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
            }))
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    async fn connect_to(&self, address: SocketAddr) -> io::Result<TcpStream> {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(bytes) = self.socket_buffer {
            // Before connecting, so the window the handshake announces already fits.
            socket.set_send_buffer_size(bytes)?;
            socket.set_recv_buffer_size(bytes)?;
        }
        let stream = socket.connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Bounds a socket's send and receive buffers to `bytes` each, which also stops the kernel
/// autotuning them: the socket then holds at most twice `bytes` per direction (the kernel's
/// bookkeeping), or less where the host's `rmem_max`/`wmem_max` are lower. On a listening socket
/// it bounds every connection accepted from it.
pub fn bound_socket_buffers(socket: socket2::SockRef<'_>, bytes: u32) -> io::Result<()> {
    let bytes = bytes as usize;
    socket.set_send_buffer_size(bytes)?;
    socket.set_recv_buffer_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_sockets_hold_at_most_twice_the_size_asked() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let dialer = Dialer::new(&address, Duration::from_secs(5))
            .expect("an authority")
            .socket_buffer(64 * 1024);
        let stream = dialer.connect().await.expect("connect");
        let socket = socket2::SockRef::from(&stream);
        for size in [socket.send_buffer_size(), socket.recv_buffer_size()] {
            let size = size.expect("getsockopt");
            assert!(size <= 2 * 64 * 1024, "{size} bytes");
        }
        assert!(stream.nodelay().expect("TCP_NODELAY"));
    }
}
