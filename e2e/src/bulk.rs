//! Large bodies whose every byte is checkable, produced at the pace the reader takes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::app::{tokio_stream_from, TestBody};
pub use crate::buffers::CHUNK;

/// The byte at `offset` of every bulk body.
pub fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Checks `data`, found at `offset` of a body, against the pattern.
pub fn matches_pattern(offset: u64, data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .all(|(i, &b)| b == byte_at(offset + i as u64))
}

/// A body of `len` pattern bytes. `produced` counts the bytes handed over so far: the body
/// produces a chunk only when the previous one was taken, so `produced` shows how much the
/// path downstream has buffered.
pub fn body(len: u64, produced: Arc<AtomicU64>) -> TestBody {
    let (frames_tx, frames_rx) =
        mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
    tokio::spawn(async move {
        let mut offset = 0;
        while offset < len {
            let size = (len - offset).min(CHUNK as u64);
            let chunk: Bytes = (offset..offset + size).map(byte_at).collect();
            if frames_tx.send(Ok(Frame::data(chunk))).await.is_err() {
                return;
            }
            offset += size;
            produced.store(offset, Ordering::SeqCst);
        }
    });
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(tokio_stream_from(
        frames_rx,
    )))
}

/// Waits until the producer counting into `counter` stalls (no growth for half a second),
/// failing the moment it has produced more than `limit`: a path that buffers what it should
/// not is caught however long it takes to stall, and a correct one can never fail, since
/// the pause only decides when the test has seen enough. Returns where it stalled.
pub async fn stalls_below(counter: &AtomicU64, limit: u64, what: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut last = counter.load(Ordering::SeqCst);
    let mut still_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::SeqCst);
        assert!(
            now <= limit,
            "{what}: {now} bytes produced while nothing read them, more than the {limit} the path may hold"
        );
        if now != last {
            (last, still_since) = (now, tokio::time::Instant::now());
        } else if now > 0 && still_since.elapsed() >= Duration::from_millis(500) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the producer never stalled (at {now} bytes)"
        );
    }
}
