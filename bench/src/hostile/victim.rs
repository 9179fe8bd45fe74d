//! The proxy under attack: cz-proxy alone in front of cz-bench's app with a laptop connected
//! (`czctl tunnel connect`), or the proxy pod `czctl service intercept` deploys for the loopback
//! cluster's sample Service; its addresses, its pid, and whether it is still the process it was.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use cz_shared::contract::{ADMIN_PORT_NAME, CARRIER_PORT_NAME, TUNNEL_PORT_NAME};

use crate::load::{self, Target};
use crate::paths::carriers::{self, APP_PORT, PROXY_SELECTOR};
use crate::paths::{self, Placement, ProxyPorts};
use crate::procs::{self, free_tcp_port, CommandLog, Cpus, Process};
use crate::tools::Tools;

/// Every process of the suite may use both CPUs: the attacks measure the proxy's defences, not
/// its speed.
const PLACEMENT: Placement = Placement {
    workers: 2,
    cluster: Cpus::All,
    rest: Cpus::All,
};

/// The proxy's listeners, at one address.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Where the proxy listens: 127.0.0.1, or the proxy pod's address.
    pub ip: Ipv4Addr,
    /// The intercepted HTTP port.
    pub http: u16,
    /// A raw TCP pass-through port in front of an HTTP server, if the proxy has one.
    pub passthrough: Option<u16>,
    /// The admin port.
    pub admin: u16,
    /// The tunnel's port-forward carrier (TCP), when reachable from this machine.
    pub carrier: Option<u16>,
    /// The tunnel's UDP port.
    pub tunnel: u16,
    /// The intercepted Service's address, in the cluster.
    pub service: Option<SocketAddr>,
    /// The app behind the proxy (the laptop's), reached directly: the normal clients' control,
    /// which tells a stall of this machine from one of the proxy.
    pub control: SocketAddr,
}

impl Addresses {
    /// `port` at the proxy's address.
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Requests to the HTTP port, with the intercept header (to the laptop) or without (to the
    /// original pods).
    pub fn http_target(&self, intercept: bool) -> Target {
        Target {
            ip: self.ip,
            h1_port: self.http,
            h2_port: self.http,
            intercept,
        }
    }
}

/// How the proxy was started, and so how it is checked and its laptop reconnected.
enum Setting {
    /// cz-proxy and `czctl tunnel connect` started by the suite.
    Alone {
        ports: ProxyPorts,
        app_port: u16,
        laptop: Option<Process>,
    },
    /// The pod of `czctl service intercept` in the loopback cluster.
    Cluster {
        client: kube::Client,
        pod_uid: String,
        testkit_pid: u32,
    },
}

/// A proxy under attack.
pub struct Victim {
    /// What the report calls it.
    pub name: &'static str,
    /// Where it listens.
    pub addresses: Addresses,
    /// Its process id (RSS, and that it never restarts).
    pub pid: u32,
    /// What is not attacked in this target, and why.
    pub not_attacked: Vec<String>,
    /// Dropped before `_processes`: the laptop of cz-proxy alone stops first.
    setting: Setting,
    /// Stopped when dropped, in order: the app, then czctl, then the proxy or the cluster.
    _processes: Vec<Process>,
}

impl Victim {
    /// cz-proxy on 127.0.0.1 with a pass-through port, both in front of cz-bench's app, and a
    /// laptop connected through its tunnel; returns once both routes answer.
    pub async fn alone(tools: &Tools, dir: &Path, log: &mut CommandLog) -> anyhow::Result<Self> {
        let (app, app_port) = paths::start_app(PLACEMENT, log)?;
        let passthrough = free_tcp_port()?;
        let extra = [format!("--passthrough={passthrough}=127.0.0.1:{app_port}")];
        let (proxy, ports) = paths::start_cz_proxy(tools, PLACEMENT, app_port, &extra, dir, log)?;
        let laptop = paths::start_laptop(tools, Cpus::All, &ports, app_port, log)?;
        let addresses = Addresses {
            ip: Ipv4Addr::LOCALHOST,
            http: ports.http,
            passthrough: Some(passthrough),
            admin: ports.admin,
            carrier: Some(ports.carrier),
            tunnel: ports.tunnel,
            service: None,
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, app_port)),
        };
        let victim = Self {
            name: "cz-proxy alone",
            addresses,
            pid: proxy.pid(),
            not_attacked: Vec::new(),
            setting: Setting::Alone {
                ports,
                app_port,
                laptop: Some(laptop),
            },
            _processes: vec![app, proxy],
        };
        victim.wait_until_served().await?;
        Ok(victim)
    }

    /// `cz-testkit up --sample` and `czctl service intercept echo --tunnel direct`: the proxy
    /// pod, at its own address on the cluster's shared loopback network.
    pub async fn in_cluster(
        tools: &Tools,
        dir: &Path,
        log: &mut CommandLog,
    ) -> anyhow::Result<Self> {
        let (cluster, kubeconfig) = carriers::start_cluster(tools, Cpus::All, dir, log)?;
        let client = carriers::client(&kubeconfig).await?;
        let (app, app_port) = paths::start_app(PLACEMENT, log)?;
        let czctl =
            carriers::start_intercept(tools, Cpus::All, "direct", app_port, &kubeconfig, log)?;
        let pod = carriers::running_pod(&client, PROXY_SELECTOR).await?;
        let ip = carriers::pod_ip(&pod).context("the proxy pod has no IP")?;
        let ports = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.first())
            .and_then(|container| container.ports.clone())
            .unwrap_or_default();
        let named = |name: &str| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .with_context(|| format!("the proxy pod has no port named {name}"))
        };
        let passthrough = ports
            .iter()
            .filter(|p| !p.name.as_deref().unwrap_or_default().starts_with("cz-"))
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .find(|&port| port != APP_PORT);
        let carrier = named(CARRIER_PORT_NAME)?;
        let carrier_reachable = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((ip, carrier)),
            Duration::from_secs(1),
        )
        .is_ok();
        let mut not_attacked = Vec::new();
        if !carrier_reachable {
            not_attacked.push(format!(
                "carrier port {carrier}: bound to the pod's loopback, not reachable from here"
            ));
        }
        if passthrough.is_none() {
            not_attacked.push("pass-through port: the sample Service has none".into());
        }
        not_attacked.push(
            "laptop reconnect during the QUIC flood: czctl service intercept holds the \
             session's key, and restarting it replaces the proxy pod (checked on cz-proxy alone)"
                .into(),
        );
        let addresses = Addresses {
            ip,
            http: APP_PORT,
            passthrough,
            admin: named(ADMIN_PORT_NAME)?,
            carrier: carrier_reachable.then_some(carrier),
            tunnel: named(TUNNEL_PORT_NAME)?,
            service: Some(carriers::service_address(&client).await?),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, app_port)),
        };
        let testkit_pid = cluster.pid();
        let pid = procs::descendant_named(testkit_pid, "cz-proxy")
            .context("no cz-proxy process under cz-testkit")?;
        let victim = Self {
            name: "through the loopback Service",
            addresses,
            pid,
            not_attacked,
            setting: Setting::Cluster {
                client,
                pod_uid: pod.metadata.uid.unwrap_or_default(),
                testkit_pid,
            },
            // The intercept is restored while the cluster still runs.
            _processes: vec![app, czctl, cluster],
        };
        victim.wait_until_served().await?;
        Ok(victim)
    }

    /// Waits until both routes of the HTTP port answer.
    async fn wait_until_served(&self) -> anyhow::Result<()> {
        for intercept in [false, true] {
            load::wait_until_served(self.addresses.http_target(intercept))
                .await
                .with_context(|| {
                    format!("{} does not serve (intercept: {intercept})", self.name)
                })?;
        }
        Ok(())
    }

    /// The checks that the proxy never restarted, each failed one as a line: the same process
    /// still runs, and in the cluster the same pod with a restart count of 0.
    pub async fn restarts(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if !procs::is_alive(self.pid) {
            failed.push(format!(
                "the proxy process (pid {}) is gone; expected it to keep running",
                self.pid
            ));
        }
        if let Setting::Cluster {
            client,
            pod_uid,
            testkit_pid,
        } = &self.setting
        {
            if procs::descendant_named(*testkit_pid, "cz-proxy") != Some(self.pid) {
                failed.push(format!(
                    "the proxy pod's process is no longer pid {}; expected the same process",
                    self.pid
                ));
            }
            match carriers::running_pod(client, PROXY_SELECTOR).await {
                Ok(pod) if pod.metadata.uid.as_deref() != Some(pod_uid) => failed.push(format!(
                    "the proxy pod was replaced (uid {pod_uid} → {:?}); expected the same pod",
                    pod.metadata.uid
                )),
                Ok(pod) => {
                    let restarts: i32 = pod
                        .status
                        .and_then(|s| s.container_statuses)
                        .unwrap_or_default()
                        .iter()
                        .map(|c| c.restart_count)
                        .sum();
                    if restarts != 0 {
                        failed.push(format!(
                            "the proxy pod's restartCount is {restarts}; expected 0"
                        ));
                    }
                }
                Err(error) => failed.push(format!(
                    "the proxy pod could not be read ({error:#}); expected it running"
                )),
            }
        }
        failed
    }

    /// Replaces the laptop with a fresh `czctl tunnel connect` and times until an intercepted
    /// request is answered again; `None` where the suite cannot restart the laptop alone.
    pub async fn reconnect_laptop(
        &mut self,
        tools: &Tools,
        log: &mut CommandLog,
    ) -> Option<anyhow::Result<Duration>> {
        let Setting::Alone {
            ports,
            app_port,
            laptop,
        } = &mut self.setting
        else {
            return None;
        };
        // Stopped (SIGTERM, as a developer's Ctrl-C) before its successor starts.
        drop(laptop.take());
        let started = Instant::now();
        let result = async {
            *laptop = Some(paths::start_laptop(
                tools,
                Cpus::All,
                ports,
                *app_port,
                log,
            )?);
            load::wait_until_served(self.addresses.http_target(true)).await?;
            Ok(started.elapsed())
        }
        .await;
        Some(result)
    }
}
