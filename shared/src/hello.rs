//! The hello exchange that opens every tunnel connection, both sides written once: the laptop
//! opens the control stream and speaks first, the proxy reads and answers, and each checks the
//! other's version. What to do about a mismatch (who closes, when) is each side's policy.

use crate::protocol::{Hello, Side, VersionMismatch};
use crate::stream::{read_hello, StreamError};

/// Why a hello exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The control stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The peer speaks an incompatible protocol version.
    #[error(transparent)]
    Mismatch(#[from] VersionMismatch),
}

fn lost(error: quinn::ConnectionError) -> StreamError {
    StreamError::Read(error.into())
}

/// The laptop's side: opens the control stream, sends `ours`, reads the proxy's hello and
/// checks it. Returns the proxy's hello.
pub async fn laptop_hello(
    connection: &quinn::Connection,
    ours: &Hello,
) -> Result<Hello, HelloError> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
    send.write_all(&ours.encode())
        .await
        .map_err(StreamError::from)?;
    send.finish()
        .map_err(|_| StreamError::from(quinn::WriteError::ClosedStream))?;
    let proxy = read_hello(&mut recv).await?;
    ours.check_compatible(Side::Client, &proxy)?;
    Ok(proxy)
}

/// The proxy's side: accepts the control stream, reads the laptop's hello, answers with `ours`
/// (also on a mismatch, so the laptop can report both versions) and checks it. Returns the
/// laptop's hello.
pub async fn proxy_hello(
    connection: &quinn::Connection,
    ours: &Hello,
) -> Result<Hello, HelloError> {
    let (mut send, mut recv) = connection.accept_bi().await.map_err(lost)?;
    let laptop = read_hello(&mut recv).await?;
    send.write_all(&ours.encode())
        .await
        .map_err(StreamError::from)?;
    send.finish()
        .map_err(|_| StreamError::from(quinn::WriteError::ClosedStream))?;
    ours.check_compatible(Side::Proxy, &laptop)?;
    Ok(laptop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_learn_the_others_hello() {
        let (_server, proxy_side, laptop_side) = crate::loopback::connection().await;
        let (laptop, proxy) = (Hello::new("laptop-1"), Hello::new("proxy-1"));
        let (seen_by_proxy, seen_by_laptop) =
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                tokio::join!(
                    proxy_hello(&proxy_side, &proxy),
                    laptop_hello(&laptop_side, &laptop)
                )
            })
            .await
            .expect("the exchange ends within 10 s");
        assert_eq!(seen_by_proxy.expect("proxy side"), laptop);
        assert_eq!(seen_by_laptop.expect("laptop side"), proxy);
    }

    #[tokio::test]
    async fn another_major_version_is_a_mismatch_on_both_sides() {
        let (_server, proxy_side, laptop_side) = crate::loopback::connection().await;
        let mut laptop = Hello::new("laptop-2");
        laptop.protocol.major += 1;
        let proxy = Hello::new("proxy-1");
        let (at_proxy, at_laptop) =
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                tokio::join!(
                    proxy_hello(&proxy_side, &proxy),
                    laptop_hello(&laptop_side, &laptop)
                )
            })
            .await
            .expect("the exchange ends within 10 s");
        for result in [at_proxy, at_laptop] {
            match result {
                Err(HelloError::Mismatch(mismatch)) => {
                    assert_eq!(
                        (mismatch.proxy, mismatch.client),
                        (proxy.clone(), laptop.clone())
                    )
                }
                other => panic!("expected a mismatch, got {other:?}"),
            }
        }
    }
}
