//! The normal clients that keep using the proxy during every attack: a steady rate of requests
//! on each route, alternating a keep-alive connection and a fresh one, each timed and checked.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{Either, Empty};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::victim::Addresses;
use crate::load::{self, Target};

/// Requests per second on each route.
const RATE: u32 = 25;
/// A normal request not answered within this long has failed (and holds its route up no longer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The error messages kept per route, for the report.
const EXAMPLES: usize = 3;

/// A way a normal client uses the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The HTTP port without the intercept header: to the original pods.
    Cluster,
    /// The HTTP port with the intercept header: through the tunnel to the laptop.
    Intercepted,
    /// The raw TCP pass-through port, to an HTTP server behind it.
    Passthrough,
    /// `GET /readyz` on the admin port.
    Readiness,
    /// The app behind the proxy, directly: not the proxy's, the control that shows when this
    /// machine stalled.
    Control,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cluster => "HTTP port, to the pods",
            Self::Intercepted => "HTTP port, intercepted",
            Self::Passthrough => "pass-through port",
            Self::Readiness => "admin /readyz",
            Self::Control => "the app directly (control)",
        })
    }
}

impl Route {
    /// The routes the proxy at `addresses` has, with where their requests go and their path.
    fn all(addresses: &Addresses) -> Vec<(Self, Target, &'static str)> {
        let plain = |port| Target {
            ip: addresses.ip,
            h1_port: port,
            h2_port: port,
            intercept: false,
        };
        let mut routes = vec![
            (Self::Cluster, addresses.http_target(false), "/"),
            (Self::Intercepted, addresses.http_target(true), "/"),
            (Self::Readiness, plain(addresses.admin), "/readyz"),
        ];
        if let Some(port) = addresses.passthrough {
            routes.push((Self::Passthrough, plain(port), "/"));
        }
        if let SocketAddr::V4(control) = addresses.control {
            let target = Target {
                ip: *control.ip(),
                ..plain(control.port())
            };
            routes.push((Self::Control, target, "/"));
        }
        routes
    }
}

/// An answered request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent, in ms since the normal clients started.
    pub at_ms: f64,
    /// How long it took, in ms.
    pub latency_ms: f64,
}

impl Sample {
    /// Whether it was in flight at any time `other` was.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.at_ms < other.at_ms + other.latency_ms && other.at_ms < self.at_ms + self.latency_ms
    }
}

/// What the normal client of one route saw.
#[derive(Debug, Clone)]
pub struct RouteSamples {
    /// The route.
    pub route: Route,
    /// Each answered request.
    pub answered: Vec<Sample>,
    /// Requests that failed or timed out.
    pub failed: usize,
    /// The first few failures' messages.
    pub examples: Vec<String>,
}

impl RouteSamples {
    /// Requests sent.
    pub fn sent(&self) -> usize {
        self.answered.len() + self.failed
    }

    /// The slowest answered request, in ms.
    pub fn max_ms(&self) -> f64 {
        self.answered
            .iter()
            .map(|s| s.latency_ms)
            .fold(0.0, f64::max)
    }

    /// The latency at quantile `q` (0–1), in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted: Vec<f64> = self.answered.iter().map(|s| s.latency_ms).collect();
        sorted.sort_by(f64::total_cmp);
        let last = sorted.len().saturating_sub(1);
        sorted
            .get((last as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    }
}

/// The normal clients of every route, running until stopped.
pub struct Probes {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<RouteSamples>>,
}

impl Probes {
    /// Starts a normal client on every route of `addresses`.
    pub fn start(addresses: &Addresses) -> Self {
        let stop = CancellationToken::new();
        let epoch = Instant::now();
        let tasks = Route::all(addresses)
            .into_iter()
            .map(|(route, target, path)| {
                tokio::spawn(probe(route, target, path, epoch, stop.clone()))
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients and returns what each saw.
    pub async fn stop(self) -> Vec<RouteSamples> {
        self.stop.cancel();
        let mut samples = Vec::new();
        for task in self.tasks {
            if let Ok(route) = task.await {
                samples.push(route);
            }
        }
        samples
    }
}

/// Sends [`RATE`] requests/s on one route until `stop`: even ones on a kept-alive connection
/// (opened again after a failure), odd ones on a connection of their own.
async fn probe(
    route: Route,
    target: Target,
    path: &'static str,
    epoch: Instant,
    stop: CancellationToken,
) -> RouteSamples {
    let mut samples = RouteSamples {
        route,
        answered: Vec::new(),
        failed: 0,
        examples: Vec::new(),
    };
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kept = None;
    for n in 0u64.. {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let started = Instant::now();
        let keep_alive = n % 2 == 0;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let mut fresh = None;
            let sender = match (keep_alive, &mut kept) {
                (true, Some(sender)) => sender,
                (true, kept @ None) => kept.insert(load::connect(target.ip, target.h1_port).await?),
                (false, _) => fresh.insert(load::connect(target.ip, target.h1_port).await?),
            };
            load::exchange(
                sender,
                load::request(target, path, Either::Left(Empty::new())),
            )
            .await
        })
        .await;
        match result {
            Ok(Ok(_)) => samples.answered.push(Sample {
                at_ms: (started - epoch).as_secs_f64() * 1e3,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
            }),
            failure => {
                if keep_alive {
                    kept = None;
                }
                samples.failed += 1;
                if samples.examples.len() < EXAMPLES {
                    let message = match failure {
                        Ok(Err(error)) => format!("{error:#}"),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    let kind = if keep_alive { "kept-alive" } else { "fresh" };
                    samples
                        .examples
                        .push(format!("{kind} connection: {message}"));
                }
            }
        }
    }
    samples
}
