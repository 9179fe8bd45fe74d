//! A proxy being replaced (its pod deleted: SIGTERM) tells its laptop, which dials the
//! replacement at once and serves both until the old proxy closes: make before break, so the
//! replacement never holds an intercepted request waiting for the laptop to come back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cz_e2e::client::get;
use cz_e2e::{
    metric, proxy_config, spawn_app, spawn_proxy, within, App, ProxyHandle, Session, PROMPTLY,
};
use czctl::{Carrier, CarrierStream, StreamOpener, Tunnel, TunnelConfig, TunnelEvent, TunnelState};
use tokio::sync::broadcast;

use crate::Via;

const INTERCEPT: (&str, &str) = ("x-c6o-intercept", "yes");

/// Two proxies of one session, the old one in front; the laptop's tunnel dials whichever is in
/// front, as czctl dials the session's ready proxy pod.
struct Replacement {
    old: ProxyHandle,
    new: ProxyHandle,
    front: Arc<Mutex<SocketAddr>>,
    tunnel: Tunnel,
    events: broadcast::Receiver<TunnelEvent>,
    _apps: (App, App),
}

impl Replacement {
    async fn start(via: Via, old_flags: &[&str]) -> Self {
        cz_e2e::init_tracing();
        let cluster = spawn_app("cluster", None).await;
        let laptop = spawn_app("laptop", None).await;
        let session = Session::new();
        let old = spawn_proxy(
            proxy_config(cluster.addr, old_flags),
            &session.proxy,
            0,
            &[],
        )
        .await;
        let new = spawn_proxy(proxy_config(cluster.addr, &[]), &session.proxy, 0, &[]).await;
        let address = |proxy: &ProxyHandle| match via {
            Via::Udp => proxy.tunnel,
            Via::Tcp => proxy.carrier,
        };
        let front = Arc::new(Mutex::new(address(&old)));
        let config = TunnelConfig {
            proxy: "the session's proxy".into(),
            identity: session.laptop.clone(),
            local_app: laptop.addr,
        };
        let dials = front.clone();
        let tunnel = match via {
            Via::Udp => {
                let resolver: czctl::ProxyResolver = Arc::new(move || {
                    let front = *dials.lock().expect("never poisoned");
                    Box::pin(async move { Ok(front) })
                });
                Tunnel::start_with_resolver(config, Some(resolver))
            }
            Via::Tcp => {
                let open: StreamOpener = Arc::new(move || {
                    let front = *dials.lock().expect("never poisoned");
                    Box::pin(async move {
                        let stream = tokio::net::TcpStream::connect(front).await?;
                        Ok(Box::new(stream) as CarrierStream)
                    })
                });
                Tunnel::start_with_carrier(config, Carrier::Stream(open), None)
            }
        }
        .expect("tunnel starts");
        let events = tunnel.events();
        within(PROMPTLY, "the tunnel to connect", tunnel.connected())
            .await
            .expect("connected");
        *front.lock().expect("never poisoned") = address(&new);
        Self {
            old,
            new,
            front,
            tunnel,
            events,
            _apps: (cluster, laptop),
        }
    }

    /// Waits for `wanted`; fails on a disconnection before it.
    async fn expect_event(&mut self, what: &str, wanted: fn(&TunnelEvent) -> bool) {
        within(PROMPTLY, what, async {
            loop {
                let event = self.events.recv().await.expect("events");
                assert!(
                    !matches!(event, TunnelEvent::Disconnected { .. }),
                    "the tunnel went down while waiting for {what}: {event:?}"
                );
                if wanted(&event) {
                    return;
                }
            }
        })
        .await;
    }

    /// Who answers an intercepted request sent to `proxy`.
    async fn intercepted_via(proxy: SocketAddr, path: &str) -> String {
        let answer = get(proxy, path, &[INTERCEPT]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.served_by().to_owned()
    }
}

async fn the_replacement_gets_the_laptop_while_the_old_proxy_still_serves(via: Via) {
    // The old proxy serves through a long shutdown delay: what is checked below happens in it.
    let mut setup = Replacement::start(via, &["--shutdown-delay=120s"]).await;
    assert_eq!(
        metric(setup.new.admin, "cz_proxy_tunnel_connected").await,
        0.0
    );

    setup.old.begin_shutdown();
    setup
        .expect_event("the proxy to say it drains", |event| {
            matches!(event, TunnelEvent::ProxyDraining)
        })
        .await;
    setup
        .expect_event("the tunnel to the replacement", |event| {
            matches!(event, TunnelEvent::Connected { .. })
        })
        .await;

    assert_eq!(
        metric(setup.new.admin, "cz_proxy_tunnel_connected").await,
        1.0,
        "the replacement has the laptop"
    );
    assert_eq!(
        metric(setup.old.admin, "cz_proxy_tunnel_connected").await,
        1.0,
        "the draining proxy keeps it, for the clients the cluster still sends to it"
    );
    for proxy in [setup.old.http, setup.new.http] {
        assert_eq!(Replacement::intercepted_via(proxy, "/both").await, "laptop");
    }
    assert!(matches!(setup.tunnel.state(), TunnelState::Connected(_)));
}

#[tokio::test]
async fn over_udp_the_replacement_gets_the_laptop_while_the_old_proxy_still_serves() {
    the_replacement_gets_the_laptop_while_the_old_proxy_still_serves(Via::Udp).await;
}

#[tokio::test]
async fn over_a_stream_the_replacement_gets_the_laptop_while_the_old_proxy_still_serves() {
    the_replacement_gets_the_laptop_while_the_old_proxy_still_serves(Via::Tcp).await;
}

#[tokio::test]
async fn the_old_proxy_closing_after_the_handover_is_no_loss_for_the_tunnel() {
    let mut setup = Replacement::start(Via::Udp, &["--shutdown-delay=1s"]).await;
    setup.old.begin_shutdown();
    setup
        .expect_event("the tunnel to the replacement", |event| {
            matches!(event, TunnelEvent::Connected { .. })
        })
        .await;
    let Replacement { old, new, .. } = &setup;
    within(PROMPTLY, "the old proxy to stop", async {
        while !old.has_stopped() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    assert_eq!(
        Replacement::intercepted_via(new.http, "/after").await,
        "laptop"
    );
    while let Ok(event) = setup.events.try_recv() {
        assert!(
            !matches!(
                event,
                TunnelEvent::Disconnected { .. } | TunnelEvent::ConnectFailed { .. }
            ),
            "the old proxy's close is not a loss: {event:?}"
        );
    }
    assert!(matches!(setup.tunnel.state(), TunnelState::Connected(_)));
}

#[tokio::test]
async fn a_laptop_dialling_a_proxy_that_already_drains_is_told_and_still_served() {
    let mut setup = Replacement::start(Via::Udp, &["--shutdown-delay=120s"]).await;
    // Nowhere else to go: the laptop must come back to the draining proxy.
    *setup.front.lock().expect("never poisoned") = setup.old.tunnel;
    setup.old.begin_shutdown();
    setup
        .expect_event("the proxy to say it drains", |event| {
            matches!(event, TunnelEvent::ProxyDraining)
        })
        .await;
    // The draining proxy tells the new connection too, so the laptop dials once more.
    for what in ["the tunnel to the draining proxy again", "and once more"] {
        setup
            .expect_event(what, |event| matches!(event, TunnelEvent::Connected { .. }))
            .await;
    }
    assert_eq!(
        Replacement::intercepted_via(setup.old.http, "/still").await,
        "laptop"
    );
}
