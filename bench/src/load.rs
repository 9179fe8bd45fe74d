//! Load against one path: requests/s with wrk (HTTP/1.1) and h2load (HTTP/2), and, from this
//! process, latency at a fixed rate, bulk transfers and idle keep-alive connections.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Either, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::app::Zeros;
use crate::procs::{CommandLog, Cpus};

/// The intercept header, sent on the intercepted paths.
pub const INTERCEPT_HEADER: (&str, &str) = ("X-C6O-INTERCEPT", "yes");

/// Where the load goes: ports of an address of this machine, with or without the intercept
/// header.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// 127.0.0.1, or a pod's address on the loopback cluster's shared network.
    pub ip: Ipv4Addr,
    /// HTTP/1.1 port.
    pub h1_port: u16,
    /// HTTP/2 (h2c, prior knowledge) port.
    pub h2_port: u16,
    /// Whether requests carry the intercept header.
    pub intercept: bool,
}

/// What a requests/s run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    /// Requests completed per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed or got an error status.
    pub errors: u64,
}

impl Throughput {
    /// The run with the median requests/s, with the errors of all runs.
    pub fn median(mut runs: Vec<Self>) -> Self {
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let errors = runs.iter().map(|r| r.errors).sum();
        Self {
            errors,
            ..runs[runs.len() / 2]
        }
    }
}

/// The arguments wrk and h2load share: threads (one per CPU used), 64 connections, the tool's
/// own `extra` flags, the intercept header when the path is intercepted, and the URL.
fn load_args(cpus: Cpus, target: Target, extra: &[String], port: u16) -> Vec<String> {
    let threads = if cpus == Cpus::All { 2 } else { 1 };
    let mut args = vec![format!("-t{threads}"), "-c64".into()];
    args.extend_from_slice(extra);
    if target.intercept {
        args.extend([
            "-H".into(),
            format!("{}: {}", INTERCEPT_HEADER.0, INTERCEPT_HEADER.1),
        ]);
    }
    args.push(format!("http://{}:{port}/", target.ip));
    args
}

/// Runs wrk with 64 connections for `duration`.
pub fn wrk(
    log: &mut CommandLog,
    wrk: &Path,
    cpus: Cpus,
    target: Target,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let args = load_args(
        cpus,
        target,
        &[format!("-d{}s", duration.as_secs())],
        target.h1_port,
    );
    let output = log
        .command(cpus, wrk, &args)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number_after = |label: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let rps = number_after("Requests/sec:").with_context(|| format!("wrk said:\n{text}"))?;
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let errors = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64
        + text
            .lines()
            .find(|l| l.contains("Socket errors:"))
            .map_or(0, |l| {
                l.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum()
            });
    Ok(Throughput {
        rps,
        requests,
        errors,
    })
}

/// Runs h2load with 64 connections, one stream at a time each, for `duration`.
pub fn h2load(
    log: &mut CommandLog,
    h2load: &Path,
    cpus: Cpus,
    target: Target,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let duration = format!("-D{}", duration.as_secs());
    let args = load_args(cpus, target, &["-m1".into(), duration], target.h2_port);
    let output = log
        .command(cpus, h2load, &args)
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "finished in 3.00s, 12345.67 req/s, 1.2MB/s"
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| {
            l.split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("h2load said:\n{text}"))?;
    // "requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed, 0 errored, 0 timeout"
    let counts: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .map(|l| {
            l.split(", ")
                .filter_map(|part| part.split_whitespace().rev().nth(1)?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let status_errors: u64 = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .map_or(0, |l| {
            // "status codes: 10 2xx, 0 3xx, 0 4xx, 0 5xx"
            l.split(", ")
                .skip(2)
                .filter_map(|part| part.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
                .sum()
        });
    Ok(Throughput {
        rps,
        requests: counts.get(3).copied().unwrap_or(0),
        errors: counts.get(4).copied().unwrap_or(0)
            + counts.get(5).copied().unwrap_or(0)
            + status_errors,
    })
}

/// The body of a request from this process: none, or an upload of zeros.
pub type ClientBody = Either<Empty<Bytes>, Zeros>;

/// An HTTP/1.1 connection from this process.
pub async fn connect(ip: Ipv4Addr, port: u16) -> anyhow::Result<SendRequest<ClientBody>> {
    let stream = TcpStream::connect((ip, port)).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A GET, or a POST when `body` is an upload.
pub fn request(target: Target, path: &str, body: ClientBody) -> Request<ClientBody> {
    let method = match body {
        Either::Left(_) => Method::GET,
        Either::Right(_) => Method::POST,
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench");
    if target.intercept {
        builder = builder.header(INTERCEPT_HEADER.0, INTERCEPT_HEADER.1);
    }
    builder.body(body).expect("a valid request")
}

/// Sends one request and reads the whole response; returns the body length.
pub async fn exchange(
    sender: &mut SendRequest<ClientBody>,
    request: Request<ClientBody>,
) -> anyhow::Result<u64> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("got {}", response.status());
    }
    let mut body = response.into_body();
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

/// Polls the path until a request succeeds (e.g. until the laptop is connected), for up to 10 s.
pub async fn wait_until_served(target: Target) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = async {
            let mut sender = connect(target.ip, target.h1_port).await?;
            exchange(
                &mut sender,
                request(target, "/", Either::Left(Empty::new())),
            )
            .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                bail!(
                    "{}:{} does not answer after 10 s: {error}",
                    target.ip,
                    target.h1_port
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// Sends `rate` requests/s over 32 connections for `duration`; returns each latency in µs. A request delayed by a slow
/// predecessor is timed from when it was due rather than when it was sent, so a stall counts for
/// every request it holds back.
pub async fn latency_at_rate(
    target: Target,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Vec<f64>> {
    const CONNECTIONS: u32 = 32;
    const TIMER_SLACK: Duration = Duration::from_millis(2);
    let interval = Duration::from_secs_f64(f64::from(CONNECTIONS) / f64::from(rate));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let mut sender = connect(target.ip, target.h1_port).await?;
        let first = start + interval.mul_f64(f64::from(i) / f64::from(CONNECTIONS));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval_at(first, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                let due = ticks.tick().await;
                if due.duration_since(start) >= duration {
                    return Ok::<_, anyhow::Error>(samples);
                }
                // The timer wakes up to a millisecond late; only a request held back by the
                // previous one counts from when it was due.
                let now = tokio::time::Instant::now();
                let from = if now - due > TIMER_SLACK { due } else { now };
                exchange(
                    &mut sender,
                    request(target, "/", Either::Left(Empty::new())),
                )
                .await?;
                samples.push(from.elapsed().as_secs_f64() * 1e6);
            }
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok(samples)
}

impl Latency {
    /// The percentiles of `samples` (µs).
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let last = samples.len().saturating_sub(1);
            samples
                .get((last as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// Bulk throughput of one connection, in MB/s (10^6 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    /// Upload of `len` bytes.
    pub upload: f64,
    /// Download of `len` bytes.
    pub download: f64,
}

/// Uploads and then downloads `len` bytes through the path.
pub async fn bulk(target: Target, len: u64) -> anyhow::Result<Bulk> {
    let mut sender = connect(target.ip, target.h1_port).await?;
    let started = Instant::now();
    exchange(
        &mut sender,
        request(target, "/", Either::Right(Zeros::new(len))),
    )
    .await?;
    let upload = len as f64 / started.elapsed().as_secs_f64() / 1e6;
    let started = Instant::now();
    let path = format!("/bytes/{len}");
    let got = exchange(
        &mut sender,
        request(target, &path, Either::Left(Empty::new())),
    )
    .await?;
    let download = len as f64 / started.elapsed().as_secs_f64() / 1e6;
    if got != len {
        bail!("downloaded {got} bytes of {len}");
    }
    Ok(Bulk { upload, download })
}

/// Opens `count` keep-alive connections, each having served one request, and keeps them open
/// until the returned handles are dropped.
pub async fn idle_connections(
    target: Target,
    count: usize,
) -> anyhow::Result<Vec<SendRequest<ClientBody>>> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        let mut sender = connect(target.ip, target.h1_port).await?;
        exchange(
            &mut sender,
            request(target, "/", Either::Left(Empty::new())),
        )
        .await?;
        connections.push(sender);
    }
    Ok(connections)
}
