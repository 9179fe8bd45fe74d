//! Idle HTTP/1.1 keep-alive connections: parked by the proxy while they idle (hyper's state
//! dropped, the socket kept), they still serve their next requests, pipelined ones and upgrades,
//! heads sent in pieces, and are closed at the header timeout (at the drain: `drain.rs`).

use std::time::{Duration, Instant};

use cz_e2e::{within, PROMPTLY};
use cz_proxy::http1::PARK_AFTER_IDLE;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::intercept;

/// Long enough without a request that the proxy has parked the connection.
pub(crate) const IDLE: Duration = Duration::from_millis(PARK_AFTER_IDLE.as_millis() as u64 * 4);

const INTERCEPT: &str = "x-c6o-intercept: yes\r\n";

/// `GET path` as a client writes it, to the laptop when `intercepted`.
pub(crate) fn get(path: &str, intercepted: bool) -> String {
    let intercept = if intercepted { INTERCEPT } else { "" };
    format!("GET {path} HTTP/1.1\r\nhost: svc.test\r\n{intercept}\r\n")
}

/// A raw client connection that reads responses framed by `content-length`.
pub(crate) struct Client {
    stream: TcpStream,
    unread: Vec<u8>,
}

impl Client {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            unread: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.expect("send");
    }

    /// The next response's status line and body, on a connection kept open.
    async fn response(&mut self) -> (String, String) {
        let (head, body) = self.response_with_head().await;
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "the proxy announced a close: {head}"
        );
        (head.lines().next().unwrap_or("").to_owned(), body)
    }

    /// The next response's head and body.
    pub(crate) async fn response_with_head(&mut self) -> (String, String) {
        within(PROMPTLY, "a response", async {
            let head_end = loop {
                if let Some(end) = self.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                self.fill().await;
            };
            let head = String::from_utf8_lossy(&self.unread[..head_end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().expect("a length"))
                })
                .unwrap_or_else(|| panic!("no content-length in {head}"));
            while self.unread.len() < head_end + length {
                self.fill().await;
            }
            let body = String::from_utf8_lossy(&self.unread[head_end..head_end + length]);
            let answer = (head, body.into());
            self.unread.drain(..head_end + length);
            answer
        })
        .await
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 4096];
        let read = self.stream.read(&mut buf).await.expect("read");
        assert!(read > 0, "the proxy closed the connection");
        self.unread.extend_from_slice(&buf[..read]);
    }

    /// Waits until the proxy closes the connection; returns how long that took.
    pub(crate) async fn closed_by_proxy(&mut self, what: &str) -> Duration {
        let started = Instant::now();
        let mut discard = [0u8; 4096];
        within(PROMPTLY, what, async {
            while let Ok(1..) = self.stream.read(&mut discard).await {}
        })
        .await;
        started.elapsed()
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_serves_its_next_requests_even_pipelined() {
    let setup = intercept(&[]).await;
    for (intercepted, served_by) in [(false, "cluster"), (true, "laptop")] {
        let mut client = Client::connect(setup.proxy.http).await;
        client.send(&get("/first", intercepted)).await;
        assert_eq!(
            client.response().await,
            ("HTTP/1.1 200 OK".into(), format!("{served_by} GET /first"))
        );
        tokio::time::sleep(IDLE).await;
        client.send(&get("/after-idle", intercepted)).await;
        assert_eq!(
            client.response().await.1,
            format!("{served_by} GET /after-idle")
        );
        tokio::time::sleep(IDLE).await;
        let pipelined = [get("/one", intercepted), get("/two", intercepted)].concat();
        client.send(&pipelined).await;
        assert_eq!(client.response().await.1, format!("{served_by} GET /one"));
        assert_eq!(client.response().await.1, format!("{served_by} GET /two"));
    }
}

#[tokio::test]
async fn a_head_sent_in_pieces_around_idle_periods_is_served() {
    let setup = intercept(&[]).await;
    let mut client = Client::connect(setup.proxy.http).await;
    client.send(&get("/first", false)).await;
    client.response().await;
    // Right after an exchange: the connection parks with half a head read.
    let head = get("/pieces", false);
    let (start, rest) = head.split_at(head.len() / 2);
    client.send(start).await;
    tokio::time::sleep(IDLE).await;
    client.send(rest).await;
    assert_eq!(client.response().await.1, "cluster GET /pieces");
    // Parked first, then a head in pieces.
    tokio::time::sleep(IDLE).await;
    let head = get("/parked-pieces", false);
    let (start, rest) = head.split_at(10);
    client.send(start).await;
    tokio::time::sleep(IDLE).await;
    client.send(rest).await;
    assert_eq!(client.response().await.1, "cluster GET /parked-pieces");
}

#[tokio::test]
async fn a_parked_connection_upgrades_to_a_websocket() {
    let setup = intercept(&[]).await;
    let mut client = Client::connect(setup.proxy.http).await;
    client.send(&get("/first", false)).await;
    client.response().await;
    tokio::time::sleep(IDLE).await;
    let request = "ws://svc.test/ws".into_client_request().expect("request");
    let upgrade = tokio_tungstenite::client_async(request, client.stream);
    let (mut socket, response) = within(PROMPTLY, "the upgrade", upgrade)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["x-served-by"], "cluster");
    socket.send(Message::text("hello")).await.expect("send");
    let reply = within(PROMPTLY, "the WebSocket reply", socket.next())
        .await
        .expect("reply")
        .expect("message");
    assert_eq!(reply.into_text().expect("text").as_str(), "cluster: hello");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let setup = intercept(&["--header-read-timeout=1s"]).await;
    let mut client = Client::connect(setup.proxy.http).await;
    client.send(&get("/first", false)).await;
    client.response().await;
    let idle = client
        .closed_by_proxy("the proxy to close an idle connection")
        .await;
    assert!(
        idle >= timeout - Duration::from_millis(100),
        "closed after {idle:?}"
    );
}

#[tokio::test]
async fn a_head_trickled_after_an_exchange_is_cut_off_at_the_header_timeout() {
    let setup = intercept(&["--header-read-timeout=1s"]).await;
    let mut client = Client::connect(setup.proxy.http).await;
    client.send(&get("/first", false)).await;
    client.response().await;
    // One byte per idle period: each lets the connection park, none may extend the deadline.
    let (mut reader, mut writer) = client.stream.split();
    let trickle = async {
        let head =
            b"GET /slow HTTP/1.1\r\nhost: svc.test\r\nx-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            // Once the proxy has closed its side, it may reset the connection.
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(IDLE).await;
        }
    };
    let mut discard = [0u8; 64];
    let closed = async { while let Ok(1..) = reader.read(&mut discard).await {} };
    tokio::select! {
        () = closed => {}
        () = trickle => panic!("the proxy waited for a head trickled for longer than the header timeout"),
    }
}
