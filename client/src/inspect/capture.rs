//! Capture on the data path: bodies are teed frame by frame as they are forwarded (copies stop
//! at the cap; the rest is only counted), and the exchange is handed to the store when it ends —
//! its response done and its request body sent or dropped, whichever is later (an app may answer
//! before it has read the request) — without ever waiting on the inspector.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{request, response, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};

use super::exchange::{streams, CapturedBody, CapturedRequest, CapturedResponse, Exchange, Timing};
use super::headers::CapturedHeaders;
use super::store::Store;

/// A body's captured bytes.
#[derive(Debug)]
struct BodySink {
    kept: BytesMut,
    size: u64,
    cap: usize,
}

/// The request's and the response's [`BodySink`]s of one exchange, in one allocation, shared
/// between the bodies being forwarded and the capture.
#[derive(Debug)]
struct Sinks([Mutex<BodySink>; 2]);

const REQUEST: usize = 0;
const RESPONSE: usize = 1;

impl Sinks {
    fn shared(cap: usize) -> Arc<Self> {
        let sink = || {
            Mutex::new(BodySink {
                kept: BytesMut::new(),
                size: 0,
                cap,
            })
        };
        Arc::new(Self([sink(), sink()]))
    }

    fn lock(&self, side: usize) -> std::sync::MutexGuard<'_, BodySink> {
        self.0[side].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How much `side` has passed so far, nothing kept: for a provisional record.
    fn size_so_far(&self, side: usize) -> CapturedBody {
        CapturedBody {
            kept: Bytes::new(),
            size: self.lock(side).size,
        }
    }

    /// What `side` captured so far; bytes still arriving afterwards are no longer kept.
    fn take(&self, side: usize) -> CapturedBody {
        let mut sink = self.lock(side);
        sink.cap = 0;
        CapturedBody {
            kept: std::mem::take(&mut sink.kept).freeze(),
            size: sink.size,
        }
    }
}

impl BodySink {
    /// Counts `chunk` and keeps what fits under the cap.
    fn record(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }
}

/// A body passed on unchanged, its data frames copied into a capture (up to the cap) on the way
/// when the inspector is on.
pub(crate) struct Tee<B> {
    inner: B,
    /// The sinks and which of them.
    sink: Option<(Arc<Sinks>, usize)>,
    /// The request body's tee holds the exchange's record back until the body ends or is
    /// dropped.
    recorder: Option<Arc<Recorder>>,
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match (&frame, &self.sink) {
            (Some(Ok(frame)), Some((sinks, side))) => {
                if let Some(data) = frame.data_ref() {
                    sinks.lock(*side).record(data);
                }
            }
            (Some(Ok(_)), None) => {}
            (None | Some(Err(_)), _) => self.recorder = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One exchange being captured; dropping it (and the request body's [`Tee`]) hands what was
/// captured to the store, however the exchange ended. Off (and free) when the tunnel has no
/// inspector.
pub(crate) struct Capture {
    active: Option<Arc<Recorder>>,
}

/// The exchange being captured, shared by its [`Capture`] and its request body's [`Tee`]: the
/// last of them to go records it in full.
struct Recorder(Mutex<Active>);

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .record(true);
    }
}

struct Active {
    store: Arc<Store>,
    /// Its number once a provisional record was made (0 before).
    id: u64,
    /// The request streams (gRPC, chunked upload).
    request_streams: bool,
    arrived: Instant,
    started: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    headers: CapturedHeaders,
    bodies: Arc<Sinks>,
    response: Option<CapturedHead>,
    timing: Timing,
    upgraded: bool,
    error: Option<String>,
}

impl Capture {
    /// No capture.
    pub(crate) fn off() -> Self {
        Self { active: None }
    }

    /// Starts capturing the exchange whose request head is `request`.
    pub(crate) fn begin(store: Arc<Store>, request: &request::Parts) -> Self {
        let cap = store.body_limit();
        Self {
            active: Some(Arc::new(Recorder(Mutex::new(Active {
                store,
                id: 0,
                request_streams: streams(|name| request.headers.get(name).map(|v| v.as_bytes())),
                arrived: Instant::now(),
                started: SystemTime::now(),
                method: request.method.clone(),
                uri: request.uri.clone(),
                version: request.version,
                headers: CapturedHeaders::from_map(&request.headers),
                bodies: Sinks::shared(cap),
                response: None,
                timing: Timing::default(),
                upgraded: false,
                error: None,
            })))),
        }
    }

    /// The request body, teed into this capture, which it holds open until it is dropped.
    pub(crate) fn tee_request<B>(&self, body: B) -> Tee<B> {
        let sink = (self.active.as_ref()).map(|a| (a.lock().bodies.clone(), REQUEST));
        Tee {
            inner: body,
            sink,
            recorder: self.active.clone(),
        }
    }

    /// Notes the response head and returns its body, teed into this capture. A streaming
    /// exchange (see [`Exchange::streaming`]) is recorded now as in progress, so that it is
    /// seen while it lasts.
    pub(crate) fn tee_response<B>(&mut self, head: &response::Parts, body: B) -> Tee<B> {
        let sink = self.active.as_ref().map(|active| {
            let mut active = active.lock();
            active.timing.response_head = Some(active.arrived.elapsed());
            let streaming = active.request_streams
                || streams(|name| head.headers.get(name).map(|v| v.as_bytes()));
            active.response = Some(copy_response_head(head));
            if streaming {
                let provisional = active.record(false);
                active.id = provisional.id;
            }
            (active.bodies.clone(), RESPONSE)
        });
        Tee {
            inner: body,
            sink,
            recorder: None,
        }
    }

    /// Notes that the connection switched protocols with `head`, and ends the capture: what
    /// follows is no longer HTTP.
    pub(crate) fn upgraded(self, head: &response::Parts) {
        if let Some(active) = &self.active {
            let mut active = active.lock();
            active.timing.response_head = Some(active.arrived.elapsed());
            active.response = Some(copy_response_head(head));
            active.upgraded = true;
        }
    }

    /// Notes why the exchange did not complete.
    pub(crate) fn failed(&mut self, error: impl std::fmt::Display) {
        if let Some(active) = &self.active {
            active.lock().error = Some(error.to_string());
        }
    }
}

/// A response head as captured.
#[derive(Clone)]
struct CapturedHead {
    status: http::StatusCode,
    version: Version,
    headers: CapturedHeaders,
}

fn copy_response_head(head: &response::Parts) -> CapturedHead {
    CapturedHead {
        status: head.status,
        version: head.version,
        headers: CapturedHeaders::from_map(&head.headers),
    }
}

impl Active {
    /// Records the exchange as captured so far: when `ended`, in full (the bodies' kept bytes
    /// taken), else as in progress (a copy of the heads, body sizes so far).
    fn record(&mut self, ended: bool) -> Arc<Exchange> {
        self.timing.total = self.arrived.elapsed();
        if ended && self.response.is_none() && self.error.is_none() {
            self.error = Some("cancelled by the cluster side before a response".to_owned());
        }
        let body = |side| {
            if ended {
                self.bodies.take(side)
            } else {
                self.bodies.size_so_far(side)
            }
        };
        let (request_body, response_body) = (body(REQUEST), body(RESPONSE));
        use std::mem::take;
        // The final record takes what it needs; a provisional one copies it.
        let (method, uri, headers, response, error) = if ended {
            (
                take(&mut self.method),
                take(&mut self.uri),
                take(&mut self.headers),
                self.response.take(),
                self.error.take(),
            )
        } else {
            (
                self.method.clone(),
                self.uri.clone(),
                self.headers.clone(),
                self.response.clone(),
                self.error.clone(),
            )
        };
        self.store.record(Exchange {
            id: self.id,
            started: self.started,
            request: CapturedRequest {
                method,
                uri,
                version: self.version,
                headers,
                body: request_body,
            },
            response: response.map(|head| CapturedResponse {
                status: head.status,
                version: head.version,
                headers: head.headers,
                body: response_body,
            }),
            timing: self.timing,
            upgraded: self.upgraded,
            error,
            in_progress: !ended,
        })
    }
}

/// Reads `body` to its end, keeping its first `cap` bytes and counting the rest (for a
/// replay's response, which the inspector reads itself).
pub(crate) async fn read_capped<B>(body: B, cap: usize) -> Result<CapturedBody, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let sinks = Sinks::shared(cap);
    let mut tee = Tee {
        inner: body,
        sink: Some((sinks.clone(), RESPONSE)),
        recorder: None,
    };
    while let Some(frame) = tee.frame().await {
        frame?;
    }
    Ok(sinks.take(RESPONSE))
}

#[cfg(test)]
mod tests;
