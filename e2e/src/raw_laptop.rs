//! A laptop that speaks the tunnel protocol by hand, for tests of a misbehaving one: it holds the
//! session's laptop identity and says hello as czctl does, then hands each request stream the
//! proxy opens to the test, which answers late, never, or wrongly.

use std::sync::Arc;
use std::time::Duration;

use cz_shared::hello::laptop_hello;
use cz_shared::protocol::{Hello, SERVER_NAME};
use cz_shared::stream::{FrameReader, FrameWriter, StreamError};
use cz_shared::tls::Identity;
use tokio::sync::mpsc;

use crate::{eventually, metric, within, ProxyHandle, PROMPTLY};

/// A laptop connected to a proxy, whose request streams the test serves by hand.
pub struct RawLaptop {
    /// The tunnel connection.
    pub connection: quinn::Connection,
    streams_rx: mpsc::Receiver<(quinn::SendStream, quinn::RecvStream)>,
    _endpoint: quinn::Endpoint,
}

/// One intercepted request as the laptop receives it.
pub struct RawRequest {
    /// The request head.
    pub head: http::request::Parts,
    /// Where the laptop writes its answer.
    pub writer: FrameWriter,
    /// The rest of the request.
    pub reader: FrameReader,
}

impl RawLaptop {
    /// Connects to `proxy` with the session's laptop `identity`, letting the proxy open at most
    /// `max_streams` request streams at once, says hello, and returns once the proxy routes
    /// intercepted requests to it.
    pub async fn connect(proxy: &ProxyHandle, identity: &Identity, max_streams: u32) -> Self {
        let mut config = identity.client_config().expect("client config");
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(max_streams.into())
            .keep_alive_interval(Some(Duration::from_secs(5)));
        config.transport_config(Arc::new(transport));
        let endpoint =
            quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
        let connection = within(PROMPTLY, "the raw laptop to connect", async {
            endpoint
                .connect_with(config, proxy.tunnel, SERVER_NAME)
                .expect("connect")
                .await
                .expect("the proxy lets a laptop of its session in")
        })
        .await;
        within(
            PROMPTLY,
            "the hello exchange",
            laptop_hello(&connection, &Hello::new("raw-laptop")),
        )
        .await
        .expect("the proxy answers the hello");
        let admin = proxy.admin;
        eventually("the proxy to route to the raw laptop", PROMPTLY, || async move {
            (metric(admin, "cz_proxy_tunnel_connected").await == 1.0).then_some(())
        })
        .await;
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let accepting = connection.clone();
        tokio::spawn(async move {
            while let Ok(streams) = accepting.accept_bi().await {
                if streams_tx.send(streams).await.is_err() {
                    return;
                }
            }
        });
        Self {
            connection,
            streams_rx,
            _endpoint: endpoint,
        }
    }

    /// The next request the proxy sends, with its head read; fails the test if none comes.
    pub async fn next_request(&mut self) -> RawRequest {
        let (send, recv) = within(
            PROMPTLY,
            "a request stream from the proxy",
            self.streams_rx.recv(),
        )
        .await
        .expect("the laptop connection is open");
        let mut reader = FrameReader::new(recv);
        let head = within(PROMPTLY, "the request head", reader.read_request_head())
            .await
            .expect("a request head")
            .into_parts()
            .0;
        RawRequest {
            head,
            writer: FrameWriter::new(send),
            reader,
        }
    }
}

impl RawRequest {
    /// The next frame of the request's body; `None` once it has ended.
    pub async fn next_body_frame(
        &mut self,
    ) -> Option<Result<http_body::Frame<bytes::Bytes>, StreamError>> {
        std::future::poll_fn(|cx| self.reader.poll_body_frame(cx)).await
    }

    /// Answers with `status` and the body `text`.
    pub async fn answer(mut self, status: http::StatusCode, text: &'static str) {
        let (head, body) = http::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                text.as_bytes(),
            )))
            .expect("response")
            .into_parts();
        self.writer
            .write_response(&head, body)
            .await
            .expect("the answer is sent");
        self.writer.finish();
    }
}
