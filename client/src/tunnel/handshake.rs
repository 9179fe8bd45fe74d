//! The laptop's side of opening a tunnel connection: the QUIC handshake, then the hello
//! exchange, each failure classified as a rejection (no retry helps) or a connection problem.

use cz_shared::hello::{laptop_hello, HelloError};
use cz_shared::protocol::{CloseCode, Hello, ALPN};
use tracing::debug;

use super::TunnelError;

/// Completes the QUIC handshake with `proxy`.
pub(super) async fn handshake(
    connecting: quinn::Connecting,
    proxy: &str,
) -> Result<quinn::Connection, TunnelError> {
    connecting.await.map_err(|error| classify(proxy, &error))
}

/// Exchanges hellos with `proxy` on `connection`; returns the proxy's.
pub(super) async fn greet(
    connection: &quinn::Connection,
    proxy: &str,
) -> Result<Hello, TunnelError> {
    match exchange_hellos(connection).await {
        Ok(hello) => Ok(hello),
        // A refused client certificate shows up only now: TLS 1.3 servers verify the client
        // after the client considers the handshake done.
        Err(HelloError::Stream(error)) => Err(match connection.close_reason() {
            Some(reason) => classify(proxy, &reason),
            None => TunnelError::Connect {
                proxy: proxy.to_owned(),
                reason: error.to_string(),
            },
        }),
        Err(HelloError::Mismatch(mismatch)) => {
            connection.close(CloseCode::VersionMismatch.into(), b"version mismatch");
            Err(mismatch.into())
        }
    }
}

/// Exchanges hellos as the laptop; returns the proxy's.
async fn exchange_hellos(connection: &quinn::Connection) -> Result<Hello, HelloError> {
    let ours = Hello::new(env!("CARGO_PKG_VERSION"));
    let proxy = laptop_hello(connection, &ours).await?;
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    debug!(alpn = ?alpn.as_deref().map(String::from_utf8_lossy), expected = ?String::from_utf8_lossy(ALPN), "hello exchanged");
    Ok(proxy)
}

/// TLS failures (QUIC crypto error codes 0x100–0x1ff) are rejections; everything else is a
/// connection problem worth retrying.
fn classify(proxy: &str, error: &quinn::ConnectionError) -> TunnelError {
    let code = match error {
        quinn::ConnectionError::TransportError(error) => Some(error.code),
        quinn::ConnectionError::ConnectionClosed(close) => Some(close.error_code),
        _ => None,
    };
    let (proxy, reason) = (proxy.to_owned(), error.to_string());
    match code.map(u64::from) {
        Some(code) if (0x100..0x200).contains(&code) => TunnelError::Rejected { proxy, reason },
        _ => TunnelError::Connect { proxy, reason },
    }
}
