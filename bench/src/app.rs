//! The upstream and the laptop's app of every path: a fixed-response HTTP/1.1 + h2c server, so
//! the app is never what limits a path.
//!
//! `GET /bytes/N` streams N zero bytes; a request with a body has it drained and counted; every
//! other request gets [`SMALL_RESPONSE`].

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The small response of the requests/s and latency runs.
pub const SMALL_RESPONSE: &[u8] = b"hello world\n";

/// Size of each chunk of a bulk body.
const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A body of `len` zero bytes, sent in 64 KiB chunks without allocating: bulk downloads from the
/// app and bulk uploads from the load generator.
pub struct Zeros {
    left: u64,
}

impl Zeros {
    /// `len` zero bytes.
    pub fn new(len: u64) -> Self {
        Self { left: len }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let len = self.left.min(CHUNK as u64);
        self.left -= len;
        let chunk = Bytes::from_static(&ZEROS[..len as usize]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Serves on `port` of 127.0.0.1 until the process is killed.
pub async fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let builder = builder.clone();
        tokio::spawn(async move {
            let service =
                service_fn(|request| async { Ok::<_, Infallible>(answer(request).await) });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>) -> Response<Either<Full<Bytes>, Zeros>> {
    if let Some(len) = request.uri().path().strip_prefix("/bytes/") {
        let len = len.parse().unwrap_or(0);
        return Response::new(Either::Right(Zeros::new(len)));
    }
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    Response::new(Either::Left(Full::new(Bytes::from_static(SMALL_RESPONSE))))
}
