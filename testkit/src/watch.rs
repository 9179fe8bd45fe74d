//! Watches: a stream of newline-delimited watch events, replayed from a resourceVersion and then
//! live, as a real watch cache sends them.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::body::ApiBody;
use crate::query::query_param;
use crate::resources::Kind;
use crate::selector::Selector;
use crate::store::{ApiError, ChangeType, Store};

/// A watch stream of `kind` objects (in `namespace`, if given) that `selector` picks: events
/// until the client goes or `timeoutSeconds` (from `query`) passes.
pub fn serve(
    store: &Store,
    kind: &'static Kind,
    namespace: Option<&str>,
    selector: Selector,
    query: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let revision = query_param(query, "resourceVersion").filter(|rv| !rv.is_empty() && rv != "0");
    let revision = revision
        .map(|rv| {
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))
        })
        .transpose()?;
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let bookmarks = query_param(query, "allowWatchBookmarks").is_some_and(|b| b == "true");
    let start = store.watch(kind, namespace, revision)?;
    let namespace = namespace.map(str::to_owned);
    let (events_tx, events_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let send = |event: Value| {
            let events_tx = events_tx.clone();
            async move {
                events_tx
                    .send(Ok(Frame::data(Bytes::from(format!("{event}\n")))))
                    .await
                    .is_ok()
            }
        };
        let mut last = start.revision;
        for change in start.replay {
            last = last.max(change.revision);
            if selector.matches(&change.object)
                && !send(json!({"type": change.change.as_str(), "object": *change.object})).await
            {
                return;
            }
        }
        let mut live = start.live;
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut bookmark = tokio::time::interval(Duration::from_secs(30));
        loop {
            let change = tokio::select! {
                () = &mut deadline => return,
                () = events_tx.closed() => return,
                _ = bookmark.tick(), if bookmarks => {
                    let marker = json!({"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": last.to_string()}}});
                    if !send(marker).await { return; }
                    continue;
                }
                change = live.recv() => change,
            };
            let change = match change {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let gone =
                        ApiError::new(410, "Expired", "the watch fell too far behind; list again");
                    let _ = send(json!({"type": "ERROR", "object": gone.status()})).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if change.revision <= last || !std::ptr::eq(change.kind, kind) {
                continue;
            }
            last = change.revision;
            let in_namespace = namespace
                .as_deref()
                .is_none_or(|ns| change.object["metadata"]["namespace"] == ns);
            if !in_namespace {
                continue;
            }
            // Objects entering or leaving the selection are added or deleted, as a real
            // watch cache reports them.
            let now = selector.matches(&change.object);
            let before = change
                .previous
                .as_ref()
                .is_some_and(|p| selector.matches(p));
            let event_type = match (change.change, before, now) {
                (ChangeType::Modified, false, true) => ChangeType::Added,
                (ChangeType::Modified, true, false) => ChangeType::Deleted,
                (ChangeType::Modified, false, false) => continue,
                (other, _, true) => other,
                (ChangeType::Deleted | ChangeType::Added, _, false) => continue,
            };
            if !send(json!({"type": event_type.as_str(), "object": *change.object})).await {
                return;
            }
        }
    });
    let body = StreamBody::new(futures_util::stream::unfold(
        events_rx,
        |mut rx| async move { rx.recv().await.map(|event| (event, rx)) },
    ));
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
