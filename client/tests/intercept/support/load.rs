//! Concurrent traffic through a Service while czctl switches and restores it: clients on fresh
//! connections and on keep-alive connections, with and without the intercept header, so that
//! requests are in flight through the proxy whenever it appears or goes away.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::http::{connect, get, who, Failure, INTERCEPT, REQUEST_DEADLINE};

/// Keep-alive clients open a new connection after this many requests, as many clients do, so
/// that some of their connections are made while the Service routes to the proxy (kube-proxy
/// pins a connection to the backend it was made to).
const REQUESTS_PER_CONNECTION: usize = 20;

/// What one kind of client saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests answered.
    pub answered: usize,
    /// Of those, answered by the laptop.
    pub by_laptop: usize,
    /// Requests resent on a new connection because an idle keep-alive connection was closed
    /// by the server before any answer (as every HTTP client does for a GET).
    pub resent: usize,
    /// What went wrong: errors, cut bodies, wrong backends.
    pub failures: Vec<String>,
}

/// How a client uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A new connection per request (`connection: close`).
    Fresh,
    /// Keep-alive, a new connection every [`REQUESTS_PER_CONNECTION`] requests.
    Recycled,
    /// Keep-alive, the same connection for as long as the server keeps it.
    Kept,
}

/// The running load.
pub struct Load {
    address: String,
    stop: CancellationToken,
    tasks: JoinSet<(String, Tally)>,
}

impl Load {
    /// Starts, against `address`: fresh and recycled keep-alive clients without the header
    /// (always to be answered by a pod) and with it (by a pod or the laptop, depending on the
    /// moment).
    pub fn start(address: &str) -> Self {
        let mut load = Self::start_empty(address);
        for (name, header, connections) in [
            ("fresh, no header", false, Connections::Fresh),
            ("keep-alive, no header", false, Connections::Recycled),
            ("keep-alive 2, no header", false, Connections::Recycled),
            ("fresh, header", true, Connections::Fresh),
            ("keep-alive, header", true, Connections::Recycled),
        ] {
            load.add(name, header, connections);
        }
        load
    }

    /// No clients yet, against `address`.
    pub fn start_empty(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Adds a client named `name`, with the default intercept header or none.
    pub fn add(&mut self, name: &str, header: bool, connections: Connections) {
        self.add_developer(name, header.then_some((INTERCEPT, "laptop")), connections);
    }

    /// Adds a client named `name` sending `developer`'s header, whose requests are answered by
    /// a pod or that developer's laptop app and nobody else (none: by a pod).
    pub fn add_developer(
        &mut self,
        name: &str,
        developer: Option<((&'static str, &'static str), &'static str)>,
        connections: Connections,
    ) {
        let (address, stop, name) = (self.address.clone(), self.stop.clone(), name.to_owned());
        self.tasks.spawn(async move {
            let tally = client(&address, developer, connections, stop).await;
            (name, tally)
        });
    }

    /// Stops the clients; returns what each saw, by name.
    pub async fn finish(mut self) -> Vec<(String, Tally)> {
        self.stop.cancel();
        let mut tallies = Vec::new();
        while let Some(joined) = self.tasks.join_next().await {
            tallies.push(joined.expect("a load client"));
        }
        tallies.sort_by(|a, b| a.0.cmp(&b.0));
        tallies
    }
}

async fn client(
    address: &str,
    developer: Option<((&'static str, &'static str), &'static str)>,
    connections: Connections,
    stop: CancellationToken,
) -> Tally {
    let header = developer.map(|(header, _)| header);
    let laptop = developer.map_or("", |(_, laptop)| laptop);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
    let mut count = 0usize;
    while !stop.is_cancelled() {
        count += 1;
        let path = format!("/load/{count}");
        let outcome = tokio::time::timeout(
            REQUEST_DEADLINE,
            request(
                address,
                &path,
                header,
                connections != Connections::Fresh,
                connections == Connections::Recycled
                    && count.is_multiple_of(REQUESTS_PER_CONNECTION),
                &mut connection,
                &tally,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(format!("{path}: no answer within {REQUEST_DEADLINE:?}")));
        let mut tally = tally.lock().expect("not poisoned");
        match outcome {
            Ok(pod) if header.is_none() && !pod.starts_with("echo-") => {
                tally.failures.push(format!("{path} answered by {pod}"))
            }
            Ok(pod) if !pod.starts_with("echo-") && pod != laptop => {
                tally.failures.push(format!("{path} answered by {pod}"))
            }
            Ok(pod) => {
                tally.answered += 1;
                tally.by_laptop += usize::from(pod == laptop);
            }
            Err(error) => {
                connection = None;
                tally.failures.push(error)
            }
        }
    }
    let tally = tally.lock().expect("not poisoned").clone();
    tally
}

/// One request; on a reused keep-alive connection that the server closed before answering, sent
/// again on a new connection. A response cut short is never resent. `recycle`: the connection
/// is not kept for the next request.
async fn request(
    address: &str,
    path: &str,
    header: Option<(&str, &str)>,
    keep_alive: bool,
    recycle: bool,
    connection: &mut Option<SendRequest<Empty<Bytes>>>,
    tally: &Mutex<Tally>,
) -> Result<String, String> {
    loop {
        let reused = connection.is_some();
        let mut sender = match connection.take() {
            Some(sender) => sender,
            None => connect(address).await.map_err(|e| format!("{path}: {e}"))?,
        };
        let closed_before_answer = |error: &hyper::Error| {
            error.is_canceled() || error.is_closed() || error.is_incomplete_message()
        };
        if let Err(error) = sender.ready().await {
            if reused && closed_before_answer(&error) {
                tally.lock().expect("not poisoned").resent += 1;
                continue;
            }
            return Err(format!("{path}: {error}"));
        }
        match get(&mut sender, path, header, !keep_alive).await {
            Ok((status, body)) => {
                if keep_alive && !recycle {
                    *connection = Some(sender);
                }
                return who(status, &body).map_err(|e| format!("{path}: {e}"));
            }
            Err(Failure::NoAnswer(error)) if reused && closed_before_answer(&error) => {
                tally.lock().expect("not poisoned").resent += 1;
            }
            Err(error) => return Err(format!("{path}: {error}")),
        }
    }
}
