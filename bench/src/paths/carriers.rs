//! The carrier paths: cz-proxy as `czctl service intercept` deploys it in the loopback cluster
//! (`cz-testkit up --sample`, shared network so that the pod's UDP port is reachable too), the
//! tunnel carried by a port-forward through the cluster's API server or by UDP to the pod; and a
//! raw port-forward through the same API server to the in-cluster app, the carrier's own limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use super::{start_app, Placement, RunningPath};
use crate::load::Target;
use crate::procs::{free_tcp_port, wait_for_port, CommandLog, Cpus, Process};
use crate::tools::Tools;

/// The sample's namespace.
pub const NAMESPACE: &str = "demo";
/// The sample Service every carrier path intercepts.
pub const SERVICE: &str = "echo";
/// The intercepted port of the sample Service.
const SERVICE_PORT: u16 = 80;
/// The port its pods serve it on (and so the proxy pod's HTTP port).
pub const APP_PORT: u16 = 8080;
/// The labels of the proxy pod `czctl service intercept` deploys.
pub const PROXY_SELECTOR: &str = "app.kubernetes.io/name=cz-proxy";
/// The start of the line `czctl service intercept` prints once the intercept is set up.
pub const INTERCEPTING: &str = "Intercepting";

/// How long the loopback cluster and the intercept may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// What carries a path through the loopback cluster.
#[derive(Debug, Clone, Copy)]
pub enum Carrier {
    /// The QUIC tunnel, over `--tunnel port-forward` or `--tunnel direct`.
    Tunnel(&'static str),
    /// No tunnel: HTTP through a port-forward to the in-cluster app.
    RawPortForward,
}

/// Starts a loopback cluster of its own, then the carrier's path through it.
pub async fn start(
    carrier: Carrier,
    placement: Placement,
    tools: &Tools,
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<RunningPath> {
    let (cluster, kubeconfig) = start_cluster(tools, placement.cluster, dir, log)?;
    let client = client(&kubeconfig).await?;
    let measured = vec![cluster.pid()];
    match carrier {
        Carrier::Tunnel(tunnel) => {
            let (app, app_port) = start_app(placement, log)?;
            let czctl = start_intercept(tools, placement.rest, tunnel, app_port, &kubeconfig, log)?;
            let (_, proxy) = pod(&client, PROXY_SELECTOR).await?;
            Ok(RunningPath {
                target: Target {
                    ip: proxy,
                    h1_port: APP_PORT,
                    h2_port: APP_PORT,
                    intercept: true,
                },
                measured,
                laptop: vec![czctl.pid()],
                // Dropped in this order: the intercept is restored while the cluster still runs.
                _processes: vec![app, czctl, cluster],
            })
        }
        Carrier::RawPortForward => {
            let (echo, _) = pod(&client, "app=echo").await?;
            let port = free_tcp_port()?;
            let args = [
                "forward".into(),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--namespace={NAMESPACE}"),
                format!("--pod={echo}"),
                format!("--pod-port={APP_PORT}"),
                format!("--port={port}"),
            ];
            let own = std::env::current_exe()?;
            let mut forwarder =
                Process::spawn("forwarder", log.command(placement.rest, &own, &args))?;
            wait_for_port(&mut forwarder, port)?;
            Ok(RunningPath {
                target: Target {
                    ip: Ipv4Addr::LOCALHOST,
                    h1_port: port,
                    h2_port: port,
                    intercept: false,
                },
                measured,
                laptop: vec![forwarder.pid()],
                _processes: vec![forwarder, cluster],
            })
        }
    }
}

/// `cz-testkit up --sample --network=shared` with its kubeconfig in `dir`, once ready; returns
/// it and the kubeconfig's path.
pub fn start_cluster(
    tools: &Tools,
    cpus: Cpus,
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<(Process, PathBuf)> {
    let kubeconfig = dir.join("kubeconfig");
    let args = [
        "up".into(),
        "--sample".into(),
        "--network=shared".into(),
        format!("--kubeconfig={}", kubeconfig.display()),
    ];
    let mut command = log.command(cpus, &tools.cz_testkit, &args);
    command.env("RUST_LOG", "warn");
    let cluster = Process::spawn_until_line("cz-testkit", command, "ready", READY_WITHIN)?;
    Ok((cluster, kubeconfig))
}

/// `czctl service intercept` of the sample's Service with `--tunnel=tunnel`, serving intercepted
/// requests from the app on `app_port`, once it says [`INTERCEPTING`].
pub fn start_intercept(
    tools: &Tools,
    cpus: Cpus,
    tunnel: &str,
    app_port: u16,
    kubeconfig: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<Process> {
    let command = intercept_command(tools, cpus, tunnel, app_port, kubeconfig, log);
    Process::spawn_until_line("czctl", command, INTERCEPTING, READY_WITHIN)
}

/// The command line of `czctl service intercept` of the sample's Service with `--tunnel=tunnel`,
/// serving intercepted requests from the app on `app_port`.
pub fn intercept_command(
    tools: &Tools,
    cpus: Cpus,
    tunnel: &str,
    app_port: u16,
    kubeconfig: &Path,
    log: &mut CommandLog,
) -> Command {
    let args = [
        "service".into(),
        "intercept".into(),
        SERVICE.into(),
        format!("--namespace={NAMESPACE}"),
        format!("--remotePort={SERVICE_PORT}"),
        format!("--localPort={app_port}"),
        format!("--tunnel={tunnel}"),
        format!("--kubeconfig={}", kubeconfig.display()),
    ];
    let mut command = log.command(cpus, &tools.czctl, &args);
    command.env("RUST_LOG", "warn");
    command
}

/// A client of the cluster `kubeconfig` points at.
pub async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kubeconfig_file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig_file, &KubeConfigOptions::default())
            .await?;
    Ok(Client::try_from(config)?)
}

/// The name and IP of a running pod of the sample's namespace matching `selector`.
async fn pod(client: &Client, selector: &str) -> anyhow::Result<(String, Ipv4Addr)> {
    let pod = running_pod(client, selector).await?;
    let ip = pod_ip(&pod).context("the pod has no IP")?;
    Ok((pod.metadata.name.unwrap_or_default(), ip))
}

/// A pod of the sample's namespace matching `selector` that has an IP.
pub async fn running_pod(client: &Client, selector: &str) -> anyhow::Result<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(selector))
        .await?;
    pods.items
        .into_iter()
        .find(|pod| pod_ip(pod).is_some())
        .with_context(|| format!("no pod {selector} with an IP in namespace {NAMESPACE}"))
}

/// The sample Service's intercepted port at its ClusterIP.
pub async fn service_address(client: &Client) -> anyhow::Result<SocketAddr> {
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get(SERVICE)
        .await?;
    let ip: Ipv4Addr = service
        .spec
        .and_then(|spec| spec.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("Service {NAMESPACE}/{SERVICE} has no IPv4 ClusterIP"))?;
    Ok(SocketAddr::from((ip, SERVICE_PORT)))
}

/// A pod's IPv4 address, once it has one.
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// `cz-bench forward`: a local port whose every connection is one port-forward to `pod_port`
/// of `pod`, through the API server (as `kubectl port-forward`: kube-rs's `Portforwarder` on
/// czctl's client), copied both ways in 64 KiB buffers.
pub async fn forward(
    kubeconfig: PathBuf,
    namespace: String,
    pod: String,
    pod_port: u16,
    port: u16,
) -> anyhow::Result<()> {
    const BUFFER: usize = 64 * 1024;
    let pods = Api::<Pod>::namespaced(client(&kubeconfig).await?, &namespace);
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (pods, pod) = (pods.clone(), pod.clone());
        tokio::spawn(async move {
            let Ok(mut forwarder) = pods.portforward(&pod, &[pod_port]).await else {
                return;
            };
            if let Some(mut upstream) = forwarder.take_stream(pod_port) {
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut stream,
                    &mut upstream,
                    BUFFER,
                    BUFFER,
                )
                .await;
            }
            forwarder.abort();
        });
    }
}
