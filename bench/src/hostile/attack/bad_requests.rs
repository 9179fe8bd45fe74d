//! Requests the proxy must refuse with an answer the client reads: an oversized header (431),
//! a bad request line, a bad header and a truncated chunked body (400-class), and garbage after
//! the HTTP/2 preface (a GOAWAY). A connection reset or a close before the answer is a failure:
//! the client never learns why (the proxy must drain what it did not read before closing).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::hostile::victim::Addresses;
use crate::load::INTERCEPT_HEADER;

/// How long the client waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Pause between two bad requests.
const EVERY: Duration = Duration::from_millis(200);
/// Size of the oversized header's value.
const OVERSIZED: usize = 200 * 1024;

/// The answer a bad request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This HTTP/1.1 status.
    Status(u16),
    /// Any 4xx HTTP/1.1 status.
    ClientError,
    /// An HTTP/2 GOAWAY frame.
    GoAway,
}

/// One kind of bad request.
struct Case {
    name: &'static str,
    /// The bytes sent; the write side is closed after them when `half_close`.
    bytes: Vec<u8>,
    half_close: bool,
    expect: Expect,
}

/// An HTTP/1.1 request with `line`, a Host, `headers` and the intercept header when
/// `intercept`, then `body`.
fn h1(line: &str, headers: &str, intercept: bool, body: &str) -> Vec<u8> {
    let route = if intercept {
        format!("{}: {}\r\n", INTERCEPT_HEADER.0, INTERCEPT_HEADER.1)
    } else {
        String::new()
    };
    format!("{line}\r\nHost: bench\r\n{route}{headers}\r\n{body}").into_bytes()
}

/// Requests with a 200 KB header, on both routes of the HTTP port; each must read a 431.
pub async fn oversized(
    addresses: &Addresses,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let big = format!("X-Big: {}\r\n", "a".repeat(OVERSIZED));
    let cases = [false, true].map(|intercept| Case {
        name: if intercept {
            "200 KB header, intercepted"
        } else {
            "200 KB header, to the pods"
        },
        bytes: h1("GET / HTTP/1.1", &big, intercept, ""),
        half_close: false,
        expect: Expect::Status(431),
    });
    repeat(&ways_in(addresses), &cases, ready, stop).await
}

/// Where bad requests are sent: the HTTP port, and through the intercepted Service when it has
/// an address (an L4 relay in between, as a cloud load balancer would be).
fn ways_in(addresses: &Addresses) -> Vec<(&'static str, SocketAddr)> {
    let mut ways = vec![("HTTP port", addresses.at(addresses.http))];
    ways.extend(
        addresses
            .service
            .map(|service| ("through the Service", service)),
    );
    ways
}

/// Malformed requests on the HTTP port; each must read a 400-class answer (HTTP/2: GOAWAY).
pub async fn malformed(
    addresses: &Addresses,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let mut garbage_h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A DATA frame on stream 0 where a SETTINGS frame must come: a connection error.
    garbage_h2.extend_from_slice(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    let mut cases = vec![Case {
        name: "garbage after the HTTP/2 preface",
        bytes: garbage_h2,
        half_close: false,
        expect: Expect::GoAway,
    }];
    for intercept in [false, true] {
        cases.extend([
            Case {
                name: "bad request line",
                bytes: h1("G(T / HTTP/1.1", "", intercept, ""),
                half_close: false,
                expect: Expect::ClientError,
            },
            Case {
                name: "bad header name",
                bytes: h1("GET / HTTP/1.1", "Bad Header: x\r\n", intercept, ""),
                half_close: false,
                expect: Expect::ClientError,
            },
            Case {
                name: "truncated chunked body",
                bytes: h1(
                    "POST / HTTP/1.1",
                    "Transfer-Encoding: chunked\r\n",
                    intercept,
                    "10\r\nabc",
                ),
                half_close: true,
                expect: Expect::ClientError,
            },
        ]);
    }
    repeat(&ways_in(addresses), &cases, ready, stop).await
}

/// Sends each case each way in turn, one connection each, until `stop`; counts the wrong
/// answers.
async fn repeat(
    ways: &[(&'static str, SocketAddr)],
    cases: &[Case],
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) -> anyhow::Result<Outcome> {
    let _ = ready.send(());
    let mut sent = 0;
    let mut wrong: Vec<(String, Expect, usize, String)> = Vec::new();
    let mut attempts = Vec::new();
    for case in cases {
        attempts.extend(ways.iter().map(|&(way, address)| (case, way, address)));
    }
    for &(case, way, address) in attempts.iter().cycle() {
        if stop.is_cancelled() {
            break;
        }
        sent += 1;
        if let Err(what) = attempt(address, case).await {
            let name = format!("{} ({way})", case.name);
            match wrong.iter_mut().find(|(n, ..)| *n == name) {
                Some((_, _, count, _)) => *count += 1,
                None => wrong.push((name, case.expect, 1, what)),
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
    let failed: usize = wrong.iter().map(|(_, _, count, _)| count).sum();
    let failures = wrong
        .into_iter()
        .map(|(name, expect, count, first)| {
            format!(
                "{name}: {count} without the answer (first: {first}); expected {} read by the \
                 client",
                describe(expect)
            )
        })
        .collect();
    Ok(Outcome {
        figures: format!(
            "{sent} bad requests, {} answered as expected",
            sent - failed
        ),
        failures,
    })
}

fn describe(expect: Expect) -> String {
    match expect {
        Expect::Status(status) => format!("a {status}"),
        Expect::ClientError => "a 400-class status".into(),
        Expect::GoAway => "an HTTP/2 GOAWAY".into(),
    }
}

/// Sends one bad request as a simple client does — all of it, then reads the answer (a write
/// the proxy cut short is not the verdict: the answer may be waiting) — and checks the answer;
/// `Err` says what came instead.
async fn attempt(address: SocketAddr, case: &Case) -> Result<(), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if stream.write_all(&case.bytes).await.is_ok() && case.half_close {
            stream
                .shutdown()
                .await
                .map_err(|e| format!("shutdown: {e}"))?;
        }
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        loop {
            if let Some(verdict) = judge(case.expect, &received) {
                return verdict;
            }
            match stream.read(&mut buf).await {
                Ok(0) => return Err(format!("closed without an answer ({})", shown(&received))),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(error) => return Err(format!("{error} after {}", shown(&received))),
            }
        }
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
}

/// The verdict on what was received so far, once there is one.
fn judge(expect: Expect, received: &[u8]) -> Option<Result<(), String>> {
    if let Expect::GoAway = expect {
        return go_away(received).then_some(Ok(()));
    }
    let line_end = received.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&received[..line_end]);
    let status: Option<u16> = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok());
    let right = match (expect, status) {
        (Expect::Status(wanted), Some(status)) => status == wanted,
        (_, Some(status)) => (400..500).contains(&status),
        _ => false,
    };
    Some(if right {
        Ok(())
    } else {
        Err(format!("got {line:?}"))
    })
}

/// Whether the HTTP/2 frames in `received` include a GOAWAY.
fn go_away(received: &[u8]) -> bool {
    let mut rest = received;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest[3] == 0x7 {
            return true;
        }
        rest = rest.get(9 + len..).unwrap_or_default();
    }
    false
}

/// What was received, for a message.
fn shown(received: &[u8]) -> String {
    if received.is_empty() {
        return "nothing received".into();
    }
    let text = String::from_utf8_lossy(&received[..received.len().min(40)]);
    format!("{} bytes received, starting {text:?}", received.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_is_judged_once_complete() {
        assert_eq!(judge(Expect::Status(431), b"HTTP/1.1 43"), None);
        assert_eq!(
            judge(Expect::Status(431), b"HTTP/1.1 431 Too\r\n"),
            Some(Ok(()))
        );
        assert!(matches!(
            judge(Expect::ClientError, b"HTTP/1.1 502 Bad\r\n"),
            Some(Err(_))
        ));
        assert_eq!(
            judge(Expect::ClientError, b"HTTP/1.1 400 Bad\r\n"),
            Some(Ok(()))
        );
    }

    #[test]
    fn a_goaway_is_found_after_other_frames() {
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let mut frames = settings.to_vec();
        assert!(!go_away(&frames));
        frames.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(go_away(&frames));
    }
}
