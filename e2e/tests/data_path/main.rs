//! End to end through the data path, in-process on loopback: a client → cz-proxy → either the
//! "cluster" app (upstream) or, through the QUIC tunnel and czctl, the "laptop" app.

mod bad_laptop;
mod drain;
mod failures;
mod forwarding;
mod handover;
mod inspector;
mod keep_alive;
mod limits;
mod routing;
mod sessions;
mod streaming;
mod versions;

use cz_e2e::{
    init_tracing, proxy_config, spawn_app, spawn_proxy, start_tunnel, start_tunnel_over_tcp,
    within, App, ProxyHandle, Session, PROMPTLY,
};
use czctl::Tunnel;

/// A running intercept: both apps, the proxy and a connected tunnel.
pub struct Intercept {
    pub cluster: App,
    pub laptop: App,
    pub proxy: ProxyHandle,
    pub tunnel: Tunnel,
    pub session: Session,
}

/// Starts an intercept with the default apps and `extra` proxy flags; returns once connected.
pub async fn intercept(extra: &[&str]) -> Intercept {
    init_tracing();
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    intercept_with(cluster, laptop, extra).await
}

/// What carries the tunnel in a test.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    /// Direct UDP to the proxy's tunnel port.
    Udp,
    /// A TCP stream to the proxy's carrier port, as a port-forward carries it.
    Tcp,
}

/// Like [`intercept`], with the given apps.
pub async fn intercept_with(cluster: App, laptop: App, extra: &[&str]) -> Intercept {
    intercept_via(cluster, laptop, extra, Via::Udp).await
}

/// Like [`intercept_with`], with the tunnel over `via`.
pub async fn intercept_via(cluster: App, laptop: App, extra: &[&str], via: Via) -> Intercept {
    init_tracing();
    let session = Session::new();
    let proxy = spawn_proxy(proxy_config(cluster.addr, extra), &session.proxy, 0, &[]).await;
    let tunnel = match via {
        Via::Udp => start_tunnel(proxy.tunnel, &session.laptop, laptop.addr),
        Via::Tcp => start_tunnel_over_tcp(proxy.carrier, &session.laptop, laptop.addr),
    };
    within(PROMPTLY, "the tunnel to connect", tunnel.connected())
        .await
        .expect("tunnel connects");
    Intercept {
        cluster,
        laptop,
        proxy,
        tunnel,
        session,
    }
}
