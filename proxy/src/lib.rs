//! `cz-proxy`: the in-cluster half of a czctl intercept session.
//!
//! It takes the place of the intercepted Service's pods (czctl points the Service's selector at
//! it). On the intercepted port it serves HTTP/1.1 and h2c and routes each request on its own:
//! requests matching the session's [`InterceptRule`](cz_shared::InterceptRule) go through the
//! QUIC tunnel to the developer's laptop ([`intercept`]), all others to the original pods behind
//! a shadow Service ([`upstream`]). Other ports are passed through as raw TCP ([`passthrough`]).
//! The laptop dials in ([`tunnel`]), over UDP or over a port-forward stream ([`carrier`]);
//! nothing in the cluster dials out to it.
//!
//! [`run`] takes already-bound listeners, so tests run the whole proxy in-process on ephemeral
//! ports, and `main` only parses flags, binds and waits for SIGTERM.

pub mod accept;
pub mod admin;
pub mod body;
pub mod bounds;
pub mod carrier;
pub mod config;
pub mod connection;
pub mod control;
pub mod drain;
pub mod error;
pub mod exchange;
pub mod headers;
pub mod http1;
pub mod intercept;
pub mod limits;
pub mod linger;
pub mod memory;
pub mod metrics;
pub mod park;
pub mod passthrough;
pub mod router;
pub mod routes;
pub mod server;
pub mod trusted;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cz_forward::{bound_socket_buffers, Dialer};
use cz_shared::carrier::{stream_endpoint_config, stream_transport_config, StreamListener};
use cz_shared::tls::{Identity, TlsError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use config::{Config, Passthrough};
use metrics::Listener;
use upstream::Upstream;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("could not listen on {address}: {source}")]
    Bind {
        /// What was bound.
        address: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The session certificates are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `--upstream` is not HOST:PORT.
    #[error("--upstream {0:?} is not HOST:PORT")]
    Upstream(String),
    /// The HTTP workers could not be started.
    #[error("could not start the HTTP workers: {0}")]
    Workers(#[source] io::Error),
    /// The QUIC endpoint could not be created.
    #[error("could not start the tunnel listener: {0}")]
    Tunnel(#[source] io::Error),
}

/// The proxy's sockets, bound before [`run`] so that callers choose the addresses.
pub struct Listeners {
    /// The intercepted HTTP port.
    pub http: TcpListener,
    /// Raw TCP ports and where each goes.
    pub passthrough: Vec<(TcpListener, String)>,
    /// The QUIC tunnel's UDP socket.
    pub tunnel: std::net::UdpSocket,
    /// The port-forward carrier's TCP port, on 127.0.0.1.
    pub carrier: TcpListener,
    /// The control channel's TCP port, on 127.0.0.1.
    pub control: TcpListener,
    /// The admin port.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds every port `config` names on `config.bind_ip`, except the carrier and control
    /// ports: on 127.0.0.1 when `bind_ip` is every address (as in a pod), so that only
    /// `pods/portforward` reaches them; on `bind_ip` itself when one address is given (a process
    /// standing in for a pod on a shared host, whose address stands for its network namespace).
    pub async fn bind(config: &Config) -> Result<Self, StartError> {
        let tcp = |port: u16| tcp_listener(SocketAddr::new(config.bind_ip, port));
        let mut passthrough = Vec::new();
        for forward in &config.passthrough {
            passthrough.push((tcp(forward.listen_port).await?, forward.target.clone()));
        }
        let tunnel_address = SocketAddr::new(config.bind_ip, config.tunnel_port);
        Ok(Self {
            http: tcp(config.http_port).await?,
            passthrough,
            tunnel: std::net::UdpSocket::bind(tunnel_address).map_err(|source| {
                StartError::Bind {
                    address: tunnel_address,
                    source,
                }
            })?,
            carrier: tcp_listener(SocketAddr::new(
                loopback_ip(config.bind_ip),
                config.carrier_port,
            ))
            .await?,
            control: tcp_listener(SocketAddr::new(
                loopback_ip(config.bind_ip),
                config.control_port,
            ))
            .await?,
            admin: tcp(config.admin_port).await?,
        })
    }
}

async fn tcp_listener(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// Runs the proxy until `shutdown` is cancelled, then drains ([`drain`]): ends client
/// connections at their next safe moment at once, keeps accepting (and `/readyz` passing) for
/// `config.shutdown_delay`, then stops accepting, fails `/readyz`, lets in-flight requests and
/// pass-through connections finish for up to `config.drain_timeout`, closes the tunnel and
/// returns.
pub async fn run(
    config: Config,
    identity: Identity,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let limit = |listener, max: u32| limits::ConnectionLimit::new(listener, max as usize, &metrics);
    let routes = Arc::new(routes::RouteTable::default());
    let limits = routes::TunnelLimits::from(&config);
    let session = routes::Session {
        id: config.session.clone(),
        client_ca: identity.ca_cert_pem.clone(),
        orphan_after: config.orphan_after,
    };
    let flag_route = routes::Route::new(session, config.header.clone(), limits)?;
    routes
        .join(flag_route)
        .expect("the first route joins an empty table");
    let verifier = routes::SessionsVerifier::new(routes.clone());
    let dial = |address: &str| {
        Dialer::new(address, config.upstream_connect_timeout)
            .map(|dialer| dialer.socket_buffer(config.socket_buffer_bytes))
            .map_err(|_| StartError::Upstream(address.to_owned()))
    };
    let upstream_dialer = dial(&config.upstream)?;
    let mut server_config =
        identity.server_config_verifying(verifier.clone(), cz_shared::tls::transport_config())?;
    tunnel::bound_handshakes(&mut server_config);
    let endpoint = cz_shared::udp::endpoint(listeners.tunnel, Some(server_config))
        .map_err(StartError::Tunnel)?;
    // The same laptops, certificates and route over port-forward streams.
    let streams = StreamListener::new();
    let mut carrier_config =
        identity.server_config_verifying(verifier, stream_transport_config())?;
    tunnel::bound_handshakes(&mut carrier_config);
    let carrier_endpoint = quinn::Endpoint::new_with_abstract_socket(
        stream_endpoint_config(),
        Some(carrier_config),
        streams.clone(),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(StartError::Tunnel)?;

    // Every TCP socket accepted from these listeners inherits bounded buffers.
    let bound = |listener: &TcpListener, bytes: u32| {
        bound_socket_buffers(socket2::SockRef::from(listener), bytes).map_err(StartError::Workers)
    };
    bound(&listeners.http, config.socket_buffer_bytes)?;
    bound(&listeners.carrier, config.socket_buffer_bytes)?;
    bound(&listeners.control, admin::SOCKET_BUFFER)?;
    bound(&listeners.admin, admin::SOCKET_BUFFER)?;
    for (listener, _) in &listeners.passthrough {
        bound(listener, config.socket_buffer_bytes)?;
    }

    let (drain, draining) = drain::Drain::after(shutdown.clone(), config.shutdown_delay);
    tokio::spawn(draining);
    tokio::spawn(memory::release_after_bursts());
    let ready = Arc::new(AtomicBool::new(false));
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        limit(Listener::Admin, admin::MAX_CONNECTIONS as u32),
        metrics.clone(),
        ready.clone(),
        admin_stop.clone(),
    ));
    let handshakes = limit(Listener::Tunnel, tunnel::MAX_HANDSHAKES as u32);
    let tunnel = tokio::spawn(tunnel::serve(
        endpoint.clone(),
        tunnel::Path::Udp,
        handshakes.clone(),
        routes.clone(),
        metrics.clone(),
        drain.clone(),
    ));
    let carrier_tunnel = tokio::spawn(tunnel::serve(
        carrier_endpoint.clone(),
        tunnel::Path::Streams,
        handshakes,
        routes.clone(),
        metrics.clone(),
        drain.clone(),
    ));
    tokio::spawn(tunnel::announce_drain(routes.clone(), drain.clone()));
    tokio::spawn(carrier::serve(
        listeners.carrier,
        limit(Listener::Carrier, carrier::MAX_CONNECTIONS as u32),
        streams,
        drain.closed().clone(),
    ));
    let control = control::Control {
        routes: routes.clone(),
        proxy_ca: identity.ca_cert_pem.clone(),
        limits,
    };
    tokio::spawn(control::serve(
        listeners.control,
        limit(Listener::Control, control::MAX_CONNECTIONS as u32),
        Arc::new(control),
        drain.closed().clone(),
    ));
    let connections = TaskTracker::new();
    for (listener, target) in listeners.passthrough {
        let port = passthrough::Passthrough {
            target: dial(&target)?,
            limit: limit(Listener::Passthrough, config.max_passthrough_connections),
            idle_timeout: config.passthrough_idle_timeout,
        };
        let serve = passthrough::serve(listener, port, connections.clone(), drain.closed().clone());
        tokio::spawn(serve);
    }
    let router = |upstream| {
        Arc::new(router::Router {
            routes: routes.clone(),
            upstream,
            metrics: metrics.clone(),
            reconnect_grace: config.reconnect_grace,
        })
    };
    let http_limit = limit(Listener::Http, config.max_connections);
    let mut workers = Vec::new();
    let http_listener = listeners.http.into_std().map_err(StartError::Workers)?;
    for worker in 1..config.workers() {
        let listener = http_listener.try_clone().map_err(StartError::Workers)?;
        let serve = server::serve_on_own_thread(
            worker,
            listener,
            router(Upstream::new(upstream_dialer.clone())),
            http_limit.clone(),
            config.clone(),
            drain.clone(),
        );
        workers.push(serve.map_err(StartError::Workers)?);
    }
    let http_listener = TcpListener::from_std(http_listener).map_err(StartError::Workers)?;
    ready.store(true, Ordering::Relaxed);
    info!(rule = %config.header, upstream = %config.upstream, workers = config.workers(), "serving");

    let http = async {
        let upstream = Upstream::new(upstream_dialer);
        server::serve(http_listener, router(upstream), http_limit, &config, &drain).await;
        for worker in workers {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
    };
    let passthrough_drained = async {
        // Still serving through the shutdown delay: a deleted pod's endpoint is terminating at
        // once, and kube-proxy keeps sending it new connections only while it is also serving
        // (ready) and no other endpoint is ready, as while its replacement starts.
        drain.closed().cancelled().await;
        ready.store(false, Ordering::Relaxed);
        connections.close();
        if tokio::time::timeout(config.drain_timeout, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("pass-through connections still open at the drain deadline");
        }
    };
    tokio::join!(http, passthrough_drained);
    let _ = tokio::join!(tunnel, carrier_tunnel);
    for endpoint in [&endpoint, &carrier_endpoint] {
        endpoint.close(
            cz_shared::protocol::CloseCode::Shutdown.into(),
            b"proxy shutting down",
        );
    }
    let idle = async { tokio::join!(endpoint.wait_idle(), carrier_endpoint.wait_idle()) };
    let _ = tokio::time::timeout(Duration::from_secs(1), idle).await;
    admin_stop.cancel();
    let _ = admin.await;
    info!("stopped");
    Ok(())
}

/// Where the carrier and control ports listen: the pod's loopback, unless one address is given
/// for all.
fn loopback_ip(bind_ip: IpAddr) -> IpAddr {
    if bind_ip.is_unspecified() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        bind_ip
    }
}
