//! Pod logs: where the kubelet writes each container's stdout and stderr, and the `pods/log`
//! subresource that reads them back (`kubectl logs POD [-c C] [--tail N] [-f]`, kube-rs
//! `Api::<Pod>::logs` and `log_stream`).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::body::ApiBody;
use crate::query::query_param;
use crate::resources::PODS;
use crate::store::{ApiError, Store};

/// How often a followed log is checked for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The kubelet's per-pod directories (volumes and container logs), one per pod UID.
#[derive(Debug, Clone)]
pub struct PodDirs {
    root: PathBuf,
}

impl PodDirs {
    /// Pod directories under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The directory of the pod with `uid`.
    pub fn pod(&self, uid: &str) -> PathBuf {
        self.root.join(uid)
    }

    /// The file a container's stdout and stderr go to.
    pub fn log(&self, uid: &str, container: &str) -> PathBuf {
        self.pod(uid).join(format!("{container}.log"))
    }
}

/// What `pods/log` was asked for.
struct LogRequest {
    container: String,
    tail: Option<usize>,
    follow: bool,
}

impl LogRequest {
    fn parse(pod: &Value, query: &str) -> Result<Self, ApiError> {
        let param = |name: &str| query_param(query, name);
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let names: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let container = match (param("container").as_deref(), names.as_slice()) {
            (Some(name), _) if names.contains(&name) => name.to_owned(),
            (Some(name), _) => {
                return Err(ApiError::bad_request(format!(
                    "container {name} is not valid for pod {pod_name}"
                )))
            }
            (None, [only]) => (*only).to_owned(),
            (None, _) => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    names.join(" ")
                )))
            }
        };
        let tail = param("tailLines")
            .map(|n| {
                n.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("tailLines must be a number, not {n:?}"))
                })
            })
            .transpose()?;
        let follow = param("follow").is_some_and(|f| f == "true" || f == "1");
        Ok(Self {
            container,
            tail,
            follow,
        })
    }
}

/// The last `lines` lines of `text` (all of it when `None`).
fn tail(text: &[u8], lines: Option<usize>) -> &[u8] {
    let Some(lines) = lines else { return text };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, byte)| **byte == b'\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(index, _)| index + 1);
    if lines == 0 {
        &text[text.len()..]
    } else {
        &text[start..]
    }
}

/// Whether the pod with `uid` still has `container` running (or about to run).
fn still_running(store: &Store, pod: &Value, container: &str) -> bool {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    store.get(&PODS, namespace, name).is_ok_and(|current| {
        current["metadata"]["uid"] == pod["metadata"]["uid"]
            && !current
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| s["name"] == container && s.pointer("/state/terminated").is_some())
    })
}

/// Answers `GET pods/NAME/log`: the container's output so far, or with `follow` a stream that
/// ends when the container does or the client goes.
pub async fn serve(
    dirs: &PodDirs,
    store: Arc<Store>,
    pod: &Value,
    query: &str,
) -> Result<Response<ApiBody>, ApiError> {
    let request = LogRequest::parse(pod, query)?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let path = dirs.log(uid, &request.container);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) => {
            let waiting = pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|s| s["name"] == request.container.as_str())
                .and_then(|s| s.pointer("/state/waiting/reason"))
                .and_then(Value::as_str)
                .unwrap_or("ContainerCreating");
            return Err(ApiError::bad_request(format!(
                "container \"{}\" in pod \"{}\" is waiting to start: {waiting}",
                request.container,
                pod["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
    };
    let mut written = Vec::new();
    file.read_to_end(&mut written).await.map_err(|error| {
        ApiError::new(500, "InternalError", format!("reading the log: {error}"))
    })?;
    let so_far = Bytes::copy_from_slice(tail(&written, request.tail));
    let mut response = if request.follow {
        let (chunks_tx, chunks_rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        let (pod, container) = (pod.clone(), request.container);
        tokio::spawn(async move {
            if chunks_tx.send(Ok(Frame::data(so_far))).await.is_err() {
                return;
            }
            let mut position = written.len() as u64;
            loop {
                let running = still_running(&store, &pod, &container);
                let mut more = Vec::new();
                let read = async {
                    file.seek(std::io::SeekFrom::Start(position)).await?;
                    file.read_to_end(&mut more).await
                };
                if read.await.is_err() {
                    return;
                }
                position += more.len() as u64;
                if !more.is_empty() && chunks_tx.send(Ok(Frame::data(more.into()))).await.is_err() {
                    return;
                }
                if !running {
                    return;
                }
                tokio::select! {
                    () = chunks_tx.closed() => return,
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                }
            }
        });
        let body = StreamBody::new(futures_util::stream::unfold(
            chunks_rx,
            |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) },
        ));
        Response::new(BodyExt::boxed(body))
    } else {
        Response::new(Full::new(so_far).boxed())
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(tail(text, None), text);
        assert_eq!(tail(text, Some(2)), b"two\nthree\n");
        assert_eq!(tail(text, Some(5)), text);
        assert_eq!(tail(text, Some(0)), b"");
        assert_eq!(tail(b"one\ntwo", Some(1)), b"two");
    }
}
