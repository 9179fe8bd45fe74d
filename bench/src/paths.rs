//! The paths the suite compares, each started from scratch with its own processes: direct, NGINX
//! and cz-proxy pass-through, NGINX + rathole and cz-proxy + QUIC tunnel intercepted; and the
//! tunnel's carriers through a loopback cluster (`carriers`).

mod baseline;
pub mod carriers;

use baseline::{nginx_conf, start_rathole};
pub use carriers::forward;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::load::Target;
use crate::procs::{free_tcp_port, free_udp_port, wait_for_port, CommandLog, Cpus, Process};
use crate::tools::Tools;

/// A way from the load generator to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Load generator → app.
    Direct,
    /// NGINX (header map, upstream keepalive) → app.
    NginxPassthrough,
    /// cz-proxy → app.
    CzPassthrough,
    /// NGINX → rathole server ⇒ (Noise-encrypted TCP) ⇒ rathole client → app.
    NginxTunnel,
    /// cz-proxy ⇒ (QUIC, mutual TLS) ⇒ czctl → app.
    CzTunnel,
    /// The loopback cluster's cz-proxy pod ⇒ (QUIC over a port-forward through the API server)
    /// ⇒ czctl → app.
    PortForwardCarrier,
    /// The loopback cluster's cz-proxy pod ⇒ (QUIC over UDP to the pod) ⇒ czctl → app.
    DirectCarrier,
    /// A port-forward through the loopback cluster's API server → the in-cluster app: no
    /// tunnel, the carrier's own limit.
    RawPortForward,
}

impl PathKind {
    /// Every path, in table order.
    pub const ALL: [Self; 5] = [
        Self::Direct,
        Self::NginxPassthrough,
        Self::CzPassthrough,
        Self::NginxTunnel,
        Self::CzTunnel,
    ];

    /// The tunnel's carriers through the loopback cluster, measured with one worker.
    pub const CARRIERS: [Self; 3] = [
        Self::RawPortForward,
        Self::PortForwardCarrier,
        Self::DirectCarrier,
    ];

    /// The path it is compared with: NGINX's counterpart of a cz-proxy path.
    pub fn nginx_counterpart(self) -> Option<Self> {
        match self {
            Self::CzPassthrough => Some(Self::NginxPassthrough),
            Self::CzTunnel => Some(Self::NginxTunnel),
            _ => None,
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::NginxPassthrough => "NGINX pass-through",
            Self::CzPassthrough => "cz-proxy pass-through",
            Self::NginxTunnel => "NGINX + rathole intercepted",
            Self::CzTunnel => "cz-proxy + QUIC intercepted",
            Self::PortForwardCarrier => "intercepted, tunnel over port-forward",
            Self::DirectCarrier => "intercepted, tunnel direct (UDP)",
            Self::RawPortForward => "raw port-forward (kube-rs Portforwarder), no tunnel",
        })
    }
}

/// How the processes of a path are placed.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// Worker processes of NGINX, runtime threads of cz-proxy.
    pub workers: u8,
    /// Where the cluster side (NGINX, rathole server, cz-proxy) runs.
    pub cluster: Cpus,
    /// Where everything else runs: load generators, the app, the laptop side of the tunnel.
    pub rest: Cpus,
}

/// The running processes of one path.
pub struct RunningPath {
    /// Where the load goes.
    pub target: Target,
    /// The cluster-side processes whose CPU and memory are measured (none for direct).
    pub measured: Vec<u32>,
    /// The laptop side of a tunnel (rathole client, czctl), whose CPU is measured too.
    pub laptop: Vec<u32>,
    _processes: Vec<Process>,
}

/// Starts `kind` in `dir`, with an app of its own, and waits until it serves.
pub async fn start(
    kind: PathKind,
    placement: Placement,
    tools: &Tools,
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<RunningPath> {
    use carriers::Carrier;
    let carrier = match kind {
        PathKind::PortForwardCarrier => Some(Carrier::Tunnel("port-forward")),
        PathKind::DirectCarrier => Some(Carrier::Tunnel("direct")),
        PathKind::RawPortForward => Some(Carrier::RawPortForward),
        _ => None,
    };
    if let Some(carrier) = carrier {
        return carriers::start(carrier, placement, tools, dir, log).await;
    }
    let (app, app_port) = start_app(placement, log)?;
    let mut processes = vec![app];
    let intercept = matches!(kind, PathKind::NginxTunnel | PathKind::CzTunnel);
    let mut laptop = Vec::new();
    let (h1_port, h2_port, measured) = match kind {
        PathKind::Direct => (app_port, app_port, Vec::new()),
        PathKind::PortForwardCarrier | PathKind::DirectCarrier | PathKind::RawPortForward => {
            unreachable!("started by carriers::start")
        }
        PathKind::NginxPassthrough | PathKind::NginxTunnel => {
            let mut measured = Vec::new();
            let laptop_port = if intercept {
                let (server, client, visitor_port) =
                    start_rathole(tools, placement, app_port, dir, log)?;
                measured.push(server.pid());
                laptop.push(client.pid());
                processes.extend([client, server]);
                visitor_port
            } else {
                app_port
            };
            let (h1, h2) = (free_tcp_port()?, free_tcp_port()?);
            let conf = nginx_conf(dir, placement.workers, h1, h2, app_port, laptop_port)?;
            let args = [
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                conf.display().to_string(),
            ];
            let mut nginx =
                Process::spawn("nginx", log.command(placement.cluster, &tools.nginx, &args))?;
            wait_for_port(&mut nginx, h1)?;
            measured.push(nginx.pid());
            processes.push(nginx);
            (h1, h2, measured)
        }
        PathKind::CzPassthrough | PathKind::CzTunnel => {
            let (proxy, ports) = start_cz_proxy(tools, placement, app_port, &[], dir, log)?;
            let measured = vec![proxy.pid()];
            processes.push(proxy);
            if intercept {
                let czctl = start_laptop(tools, placement.rest, &ports, app_port, log)?;
                laptop.push(czctl.pid());
                processes.insert(1, czctl);
            }
            let http = ports.http;
            (http, http, measured)
        }
    };
    Ok(RunningPath {
        target: Target {
            ip: Ipv4Addr::LOCALHOST,
            h1_port,
            h2_port,
            intercept,
        },
        measured,
        laptop,
        _processes: processes,
    })
}

/// The ports of a cz-proxy started by [`start_cz_proxy`], all on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ProxyPorts {
    /// The intercepted HTTP port.
    pub http: u16,
    /// UDP port of the QUIC tunnel.
    pub tunnel: u16,
    /// TCP port of the admin endpoints.
    pub admin: u16,
    /// TCP port of the tunnel over a port-forward stream.
    pub carrier: u16,
    /// Where the session's certificates are: `proxy/` and `laptop/`.
    pub certs: PathBuf,
}

/// cz-proxy on 127.0.0.1 in front of the app on `app_port`, with a session's certificates made
/// in `dir` and `extra_args` (e.g. `--passthrough=…`); returns it once it listens.
pub fn start_cz_proxy(
    tools: &Tools,
    placement: Placement,
    app_port: u16,
    extra_args: &[String],
    dir: &Path,
    log: &mut CommandLog,
) -> anyhow::Result<(Process, ProxyPorts)> {
    let certs = dir.join("certs");
    if !certs.join("proxy").exists() {
        let args = [
            "tunnel".into(),
            "certs".into(),
            "--out".into(),
            certs.display().to_string(),
        ];
        let status = log.command(Cpus::All, &tools.czctl, &args).output()?;
        anyhow::ensure!(status.status.success(), "czctl tunnel certs failed");
    }
    let ports = ProxyPorts {
        http: free_tcp_port()?,
        tunnel: free_udp_port()?,
        admin: free_tcp_port()?,
        carrier: free_tcp_port()?,
        certs,
    };
    let mut args = vec![
        "--bind-ip=127.0.0.1".into(),
        format!("--http-port={}", ports.http),
        format!("--upstream=127.0.0.1:{app_port}"),
        format!("--tunnel-port={}", ports.tunnel),
        format!("--admin-port={}", ports.admin),
        format!("--carrier-port={}", ports.carrier),
        format!("--control-port={}", free_tcp_port()?),
        format!("--tls-dir={}", ports.certs.join("proxy").display()),
        format!("--worker-threads={}", placement.workers),
    ];
    args.extend_from_slice(extra_args);
    let mut command = log.command(placement.cluster, &tools.cz_proxy, &args);
    command.env("RUST_LOG", "warn");
    let mut proxy = Process::spawn("cz-proxy", command)?;
    wait_for_port(&mut proxy, ports.http)?;
    Ok((proxy, ports))
}

/// The laptop side of a proxy started by [`start_cz_proxy`]: `czctl tunnel connect`, serving
/// intercepted requests from the app on `app_port`.
pub fn start_laptop(
    tools: &Tools,
    cpus: Cpus,
    ports: &ProxyPorts,
    app_port: u16,
    log: &mut CommandLog,
) -> anyhow::Result<Process> {
    start_laptop_with(tools, cpus, ports, app_port, &[], log)
}

/// [`start_laptop`] with `extra` arguments for czctl (e.g. `--inspect=…`).
pub fn start_laptop_with(
    tools: &Tools,
    cpus: Cpus,
    ports: &ProxyPorts,
    app_port: u16,
    extra: &[String],
    log: &mut CommandLog,
) -> anyhow::Result<Process> {
    let mut args = vec![
        "tunnel".into(),
        "connect".into(),
        format!("--endpoint=127.0.0.1:{}", ports.tunnel),
        format!("--identity-dir={}", ports.certs.join("laptop").display()),
        format!("--localPort={app_port}"),
        "-q".into(),
    ];
    args.extend_from_slice(extra);
    let mut command = log.command(cpus, &tools.czctl, &args);
    command.env("RUST_LOG", "warn");
    Process::spawn("czctl", command)
}

/// The app of a path (cz-bench's own), on the other CPU; returns it and its port.
pub fn start_app(placement: Placement, log: &mut CommandLog) -> anyhow::Result<(Process, u16)> {
    let port = free_tcp_port()?;
    let args = [
        "app".into(),
        "--port".into(),
        port.to_string(),
        "--threads".into(),
        placement.workers.to_string(),
    ];
    let own = std::env::current_exe()?;
    let mut app = Process::spawn("app", log.command(placement.rest, &own, &args))?;
    wait_for_port(&mut app, port)?;
    Ok((app, port))
}
