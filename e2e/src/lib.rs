//! Test harness for the data path: a session's certificates, the proxy and the tunnel started
//! in-process on ephemeral loopback ports, and small HTTP apps that stand in for the in-cluster
//! pods and the developer's local app. Used by the end-to-end tests and the loopback demo.

pub mod app;
pub mod buffers;
pub mod bulk;
pub mod client;
pub mod next_major;
pub mod raw_laptop;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use cz_proxy::{Config, Listeners};
use cz_shared::tls::{Identity, SessionCa};
use czctl::{Carrier, CarrierStream, Tunnel, TunnelConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use app::{spawn_app, App, Handler};
pub use cz_testkit::eventually;

/// Awaits `future`, failing the test with "`what` did not happen within `limit`" if it takes
/// longer: a regression fails instead of hanging the suite.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not happen within {limit:?}"),
    }
}

/// How long a test waits for something that should happen at once on loopback; generous, since
/// the suite runs on busy machines.
pub const PROMPTLY: Duration = Duration::from_secs(20);

/// Installs a test log subscriber once per process; `RUST_LOG` picks what it shows.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    });
}

/// One intercept session's credentials, as czctl would make them.
pub struct Session {
    /// The session CA.
    pub ca: SessionCa,
    /// What the proxy gets (through the Secret).
    pub proxy: Identity,
    /// What stays on the laptop.
    pub laptop: Identity,
}

impl Session {
    /// A fresh session.
    pub fn new() -> Self {
        let ca = SessionCa::generate().expect("session CA");
        Self {
            proxy: ca.issue_proxy().expect("proxy identity"),
            laptop: ca.issue_client().expect("laptop identity"),
            ca,
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// A proxy running in-process; stopped (drained) by [`ProxyHandle::stop`] or aborted on drop.
pub struct ProxyHandle {
    /// The intercepted HTTP port.
    pub http: SocketAddr,
    /// The tunnel's UDP address.
    pub tunnel: SocketAddr,
    /// The port-forward carrier's TCP address.
    pub carrier: SocketAddr,
    /// The admin port.
    pub admin: SocketAddr,
    /// The control channel's TCP address.
    pub control: SocketAddr,
    /// Pass-through ports, in the order given.
    pub passthrough: Vec<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Whether [`cz_proxy::run`] has returned.
    pub fn has_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the proxy to shut down (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts the proxy down and waits until it has drained and returned.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("proxy stops within its drain deadline")
                .expect("proxy task");
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Builds a proxy configuration for tests: `extra` are further `cz-proxy` flags.
pub fn proxy_config(upstream: SocketAddr, extra: &[&str]) -> Config {
    use clap::Parser;
    let upstream = format!("--upstream={upstream}");
    let mut args = vec!["cz-proxy", "--http-port=0", upstream.as_str()];
    // No shutdown delay unless a test asks for one: nothing routes to a test's proxy but the test.
    let defaults = [
        "--reconnect-grace=2s",
        "--drain-timeout=10s",
        "--shutdown-delay=0s",
    ];
    for default in defaults {
        let flag = default.split('=').next().expect("flag");
        if !extra.iter().any(|arg| arg.starts_with(flag)) {
            args.push(default);
        }
    }
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("valid test proxy flags")
}

/// Starts a proxy on ephemeral 127.0.0.1 ports (the tunnel on `tunnel_port`, 0 for any).
/// `passthrough` targets get one listener each.
pub async fn spawn_proxy(
    config: Config,
    identity: &Identity,
    tunnel_port: u16,
    passthrough: &[SocketAddr],
) -> ProxyHandle {
    let bind = || TcpListener::bind("127.0.0.1:0");
    let mut forwards = Vec::new();
    for target in passthrough {
        forwards.push((bind().await.expect("bind passthrough"), target.to_string()));
    }
    let tunnel = bind_udp(tunnel_port).await;
    let listeners = Listeners {
        http: bind().await.expect("bind http"),
        passthrough: forwards,
        tunnel,
        carrier: bind().await.expect("bind carrier"),
        control: bind().await.expect("bind control"),
        admin: bind().await.expect("bind admin"),
    };
    let control = listeners.control.local_addr().expect("addr");
    let handle_addrs = (
        listeners.http.local_addr().expect("addr"),
        listeners.tunnel.local_addr().expect("addr"),
        listeners.admin.local_addr().expect("addr"),
        listeners.carrier.local_addr().expect("addr"),
        listeners
            .passthrough
            .iter()
            .map(|(l, _)| l.local_addr().expect("addr"))
            .collect(),
    );
    let shutdown = CancellationToken::new();
    let run = cz_proxy::run(config, identity.clone(), listeners, shutdown.clone());
    let task = tokio::spawn(async move { run.await.expect("proxy runs") });
    // Ready once every listener is set up (socket buffers included), as Kubernetes waits for it.
    let admin = handle_addrs.2;
    eventually("the proxy to be ready", PROMPTLY, || async move {
        (client::get(admin, cz_shared::contract::READY_PATH, &[])
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    ProxyHandle {
        http: handle_addrs.0,
        tunnel: handle_addrs.1,
        admin: handle_addrs.2,
        carrier: handle_addrs.3,
        control,
        passthrough: handle_addrs.4,
        shutdown,
        task: Some(task),
    }
}

/// Binds a UDP socket on 127.0.0.1, retrying briefly while a just-stopped proxy releases it.
async fn bind_udp(port: u16) -> std::net::UdpSocket {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::UdpSocket::bind(("127.0.0.1", port)) {
            Ok(socket) => return socket,
            Err(error) if tokio::time::Instant::now() > deadline => {
                panic!("bind udp {port}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Starts the laptop's tunnel to `proxy`, forwarding to `local_app`.
pub fn start_tunnel(proxy: SocketAddr, identity: &Identity, local_app: SocketAddr) -> Tunnel {
    Tunnel::start(TunnelConfig {
        proxy: proxy.to_string(),
        identity: identity.clone(),
        local_app,
    })
    .expect("tunnel starts")
}

/// Starts the laptop's tunnel over a TCP stream carrier to the proxy's carrier port `carrier`
/// (what a port-forward to the proxy pod carries), forwarding to `local_app`.
pub fn start_tunnel_over_tcp(
    carrier: SocketAddr,
    identity: &Identity,
    local_app: SocketAddr,
) -> Tunnel {
    let open: czctl::StreamOpener = std::sync::Arc::new(move || {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(carrier).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as CarrierStream)
        })
    });
    Tunnel::start_with_carrier(
        TunnelConfig {
            proxy: carrier.to_string(),
            identity: identity.clone(),
            local_app,
        },
        Carrier::Stream(open),
        None,
    )
    .expect("tunnel starts")
}

/// The value of the proxy's metric `name` (a line `name value` of `/metrics` on `admin`).
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let text = client::get(admin, "/metrics", &[]).await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// An address on 127.0.0.1 where connecting hangs, as with a host that is down: a listener with
/// a backlog of 0 whose queued connection is never accepted, so the kernel drops further SYNs.
/// Connecting hangs as long as this lives.
pub struct Unresponsive {
    /// Where connecting hangs.
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<tokio::net::TcpStream>,
}

impl Unresponsive {
    /// Binds the listener and fills its accept queue.
    pub async fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        // Connections complete until the queue is full; once one is queued, the first that hangs
        // shows it is (before that, a slow connect only means a busy machine).
        for _ in 0..8 {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_secs(1), connect).await {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(error)) => panic!("connecting to the filling listener: {error}"),
                Err(_) if queued.is_empty() => {}
                Err(_) => {
                    return Self {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    }
                }
            }
        }
        panic!("the kernel kept accepting connections on a listener with a backlog of 0");
    }
}

/// A port on 127.0.0.1 with nothing listening on it, held so that no other test's listener can
/// take it meanwhile: the socket is bound without `SO_REUSEADDR` and not listening, so
/// connections to it are refused and binds to it fail. [`ClosedPort::open`] starts listening on
/// it, without a moment in which the port is free.
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    /// The port's address.
    pub addr: SocketAddr,
}

impl ClosedPort {
    /// Starts listening on the port.
    pub fn open(self) -> TcpListener {
        self.socket.listen(1024).expect("listen on the held port")
    }
}

/// Binds a [`ClosedPort`].
pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("addr");
    ClosedPort { socket, addr }
}
