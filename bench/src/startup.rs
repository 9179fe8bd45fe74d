//! The intercept's start-up time on the loopback cluster: from starting `czctl service intercept`
//! (the real binary, default `--tunnel auto`) to the first request carrying the intercept header
//! that the Service delivers to the laptop's app. Each run is stopped as Ctrl-C stops it
//! (SIGTERM) and the next starts only once czctl has exited, the Service is restored and the proxy
//! pod is gone, so that runs are independent.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Either, Empty};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use crate::app::SMALL_RESPONSE;
use crate::load::{self, Target};
use crate::paths::carriers::{self, INTERCEPTING, NAMESPACE, PROXY_SELECTOR, SERVICE};
use crate::paths::{start_app, Placement};
use crate::procs::{CommandLog, Process};
use crate::stats::median;
use crate::tools::Tools;

/// How long each step of a run (set-up, announcement, stop) may take.
const STEP_WITHIN: Duration = Duration::from_secs(60);
/// How often the Service is asked while waiting.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long one request to the Service may take.
const REQUEST_WITHIN: Duration = Duration::from_secs(1);

/// What the start-up runs measured, one entry per run.
#[derive(Debug, Clone, Default)]
pub struct StartupTimes {
    /// From starting czctl to the first intercepted response through the Service.
    pub first_response: Vec<Duration>,
    /// From starting czctl to its [`INTERCEPTING`] line, which it prints only once Services
    /// have had kube-proxy's lag (2 s) to follow the switch.
    pub announced: Vec<Duration>,
    /// From SIGTERM to czctl's exit with the Service restored and the proxy pod gone.
    pub stopped: Vec<Duration>,
}

impl StartupTimes {
    /// How many runs there were.
    pub fn runs(&self) -> usize {
        self.first_response.len()
    }
}

/// The median, shortest and longest of some times, in seconds; `None` for none.
pub fn spread(times: &[Duration]) -> Option<(f64, f64, f64)> {
    let seconds: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    let min = seconds.iter().copied().reduce(f64::min)?;
    let max = seconds.iter().copied().reduce(f64::max)?;
    Some((median(seconds), min, max))
}

/// Starts a loopback cluster with its sample and an app on the laptop side, then intercepts the
/// sample's Service `runs` times in turn. The cluster runs where `placement` puts the cluster
/// side, czctl and the app where it puts the rest.
pub async fn measure(
    tools: &Tools,
    placement: Placement,
    runs: usize,
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<StartupTimes> {
    std::fs::create_dir_all(dir)?;
    let (_cluster, kubeconfig) = carriers::start_cluster(tools, placement.cluster, dir, log)?;
    let client = carriers::client(&kubeconfig).await?;
    let SocketAddr::V4(service) = carriers::service_address(&client).await? else {
        bail!("the sample Service has no IPv4 address");
    };
    let target = Target {
        ip: *service.ip(),
        h1_port: service.port(),
        h2_port: service.port(),
        intercept: true,
    };
    // Dropped before the cluster, which is declared first.
    let (_app, app_port) = start_app(placement, log)?;
    let mut times = StartupTimes::default();
    for run in 1..=runs {
        let command =
            carriers::intercept_command(tools, placement.rest, "auto", app_port, &kubeconfig, log);
        let started = Instant::now();
        let (mut czctl, mut announced) = Process::spawn_watching("czctl", command, INTERCEPTING)?;
        let deadline = Instant::now() + STEP_WITHIN;
        while !answered_by_laptop(target).await {
            czctl.check_running()?;
            within(deadline, "no intercepted response through the Service")?;
            tokio::time::sleep(POLL_EVERY).await;
        }
        times.first_response.push(started.elapsed());
        let announced_at = loop {
            if let Some(at) = announced.seen() {
                break at;
            }
            czctl.check_running()?;
            within(deadline, "czctl did not say it was intercepting")?;
            tokio::time::sleep(POLL_EVERY).await;
        };
        times.announced.push(announced_at - started);
        let stopping = Instant::now();
        stop(&mut czctl, &client, target)
            .await
            .with_context(|| format!("stopping the intercept of run {run}"))?;
        times.stopped.push(stopping.elapsed());
    }
    Ok(times)
}

/// Stops czctl as Ctrl-C does and waits until it has exited successfully, the Service is
/// restored (no intercept recorded on it, intercepted requests reach a pod again) and the proxy
/// pod is gone.
async fn stop(czctl: &mut Process, client: &Client, target: Target) -> anyhow::Result<()> {
    czctl.terminate();
    let deadline = Instant::now() + STEP_WITHIN;
    let status = loop {
        if let Some(status) = czctl.exit_status()? {
            break status;
        }
        within(deadline, "czctl did not exit after SIGTERM")?;
        tokio::time::sleep(POLL_EVERY).await;
    };
    anyhow::ensure!(status.success(), "czctl exited with {status} after SIGTERM");
    while !restored(client).await? || answered_by_laptop(target).await {
        within(deadline, "the Service was not restored")?;
        tokio::time::sleep(POLL_EVERY).await;
    }
    Ok(())
}

/// Whether the sample Service records no intercept and no proxy pod is left.
async fn restored(client: &Client) -> anyhow::Result<bool> {
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get(SERVICE)
        .await?;
    let intercepted = service
        .metadata
        .annotations
        .is_some_and(|annotations| annotations.contains_key(czctl::INTERCEPT_ANNOTATION));
    let proxies = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(PROXY_SELECTOR))
        .await?;
    Ok(!intercepted && proxies.items.is_empty())
}

/// Whether a request with the intercept header, on a new connection to the Service (which
/// picks a backend per connection), is answered by the laptop's app rather than a pod.
async fn answered_by_laptop(target: Target) -> bool {
    let attempt = async {
        let mut sender = load::connect(target.ip, target.h1_port).await?;
        sender.ready().await?;
        let response = sender
            .send_request(load::request(target, "/", Either::Left(Empty::new())))
            .await?;
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok(body == SMALL_RESPONSE)
    };
    matches!(
        tokio::time::timeout(REQUEST_WITHIN, attempt).await,
        Ok(Ok(true))
    )
}

/// Fails with `failure` once `deadline` has passed.
fn within(deadline: Instant, failure: &str) -> anyhow::Result<()> {
    if Instant::now() > deadline {
        bail!("{failure} within {STEP_WITHIN:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_the_median_and_the_extremes_in_seconds() {
        let times = [1200, 1100, 1500, 1150, 1300].map(Duration::from_millis);
        assert_eq!(spread(&times), Some((1.2, 1.1, 1.5)));
    }

    #[test]
    fn no_runs_have_no_spread() {
        assert_eq!(spread(&[]), None);
    }
}
