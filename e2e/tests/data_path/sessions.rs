//! Several developers' sessions on one proxy: each joins over the control channel with its own
//! rule and CA, gets only its own requests through its own tunnel, and leaves without disturbing
//! the others; a request matching two rules goes to neither; a route whose laptop stays away
//! past its orphan delay gives its requests back to the cluster.

use std::net::SocketAddr;

use bytes::Bytes;
use cz_e2e::client::{get, http1};
use cz_e2e::{
    eventually, proxy_config, spawn_app, spawn_proxy, start_tunnel, start_tunnel_over_tcp, within,
    Session, PROMPTLY,
};
use cz_shared::control::{self, route_path, Join, Refusal, Routes, CONTROL_VERSION, ROUTES_PATH};
use czctl::Identity;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

/// One control exchange: the status and the body.
async fn ask(control: SocketAddr, method: Method, path: &str, body: &str) -> (StatusCode, Bytes) {
    let mut sender = http1::<Full<Bytes>>(control).await;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "cz-proxy")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = within(PROMPTLY, "the control answer", sender.send_request(request))
        .await
        .expect("response");
    let status = response.status();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
}

/// Joins `session` with `header`; returns the identity its laptop dials with.
async fn join(
    control: SocketAddr,
    id: &str,
    session: &Session,
    header: &str,
    orphan_after_seconds: u64,
) -> Result<Identity, Refusal> {
    let join = Join {
        version: CONTROL_VERSION,
        header: header.into(),
        client_ca: session.ca.certificate_pem().to_owned(),
        orphan_after_seconds,
    };
    let (status, body) = ask(
        control,
        Method::PUT,
        &route_path(id),
        &control::write(&join),
    )
    .await;
    if status != StatusCode::OK {
        return Err(control::read(&body).expect("a refusal"));
    }
    let routes: Routes = control::read(&body).expect("the routes");
    Ok(session.laptop.clone().trusting(routes.proxy_ca))
}

async fn routes(control: SocketAddr) -> Routes {
    let (status, body) = ask(control, Method::GET, ROUTES_PATH, "").await;
    assert_eq!(status, StatusCode::OK);
    control::read(&body).expect("the routes")
}

#[tokio::test]
async fn two_developers_share_a_proxy_each_with_their_own_requests_and_tunnel() {
    cz_e2e::init_tracing();
    let cluster = spawn_app("cluster", None).await;
    let alice_app = spawn_app("alice", None).await;
    let bob_app = spawn_app("bob", None).await;
    let alice = Session::new();
    let flags = ["--header=x-dev:alice", "--session=a11ce"];
    let proxy = spawn_proxy(proxy_config(cluster.addr, &flags), &alice.proxy, 0, &[]).await;
    let alice_tunnel = start_tunnel(proxy.tunnel, &alice.laptop, alice_app.addr);
    within(PROMPTLY, "alice's tunnel", alice_tunnel.connected())
        .await
        .expect("connects");

    let bob = Session::new();
    let bob_identity = join(proxy.control, "b0b", &bob, "x-dev:bob", 900)
        .await
        .expect("bob joins");
    let bob_tunnel = start_tunnel_over_tcp(proxy.carrier, &bob_identity, bob_app.addr);
    within(PROMPTLY, "bob's tunnel", bob_tunnel.connected())
        .await
        .expect("bob's laptop is accepted with its own session's certificate");

    let served = |headers: &'static [(&'static str, &'static str)]| async move {
        get(proxy.http, "/", headers).await.served_by().to_owned()
    };
    assert_eq!(served(&[("x-dev", "alice")]).await, "alice");
    assert_eq!(served(&[("x-dev", "bob")]).await, "bob");
    assert_eq!(served(&[("x-dev", "carol")]).await, "cluster");
    assert_eq!(served(&[]).await, "cluster");

    // A request both rules match goes to neither, and both routes count it.
    let both = get(proxy.http, "/", &[("x-dev", "alice"), ("x-dev", "bob")]).await;
    assert_eq!(both.status, StatusCode::CONFLICT);
    assert_eq!(both.headers["x-cz-proxy-error"], "route-conflict");
    assert!(
        both.body.contains("x-dev:alice of session a11ce"),
        "{}",
        both.body
    );
    assert!(
        both.body.contains("x-dev:bob of session b0b"),
        "{}",
        both.body
    );
    let state = routes(proxy.control).await;
    let sessions: Vec<_> = state.routes.iter().map(|r| r.session.as_str()).collect();
    assert_eq!(sessions, ["a11ce", "b0b"], "in the order they joined");
    for route in &state.routes {
        assert!(route.connected, "{route:?}");
        assert_eq!((route.requests, route.conflicts), (1, 1), "{route:?}");
    }
    assert_eq!(state.routes[0].carrier.as_deref(), Some("direct UDP"));
    assert_eq!(state.routes[1].carrier.as_deref(), Some("port-forward"));

    // The same rule is refused, naming who holds it; a stolen CA too.
    let carol = Session::new();
    let refused = join(proxy.control, "ca401", &carol, "X_DEV: Bob", 900).await;
    let refusal = refused.expect_err("bob's rule is taken");
    assert_eq!(
        (refusal.code.as_str(), refusal.held_by.as_deref()),
        ("rule-taken", Some("b0b"))
    );
    let refused = join(proxy.control, "ca401", &bob, "x-dev:carol", 900).await;
    assert_eq!(refused.expect_err("bob's CA is taken").code, "ca-taken");

    // Bob leaves: his requests go to the cluster, his tunnel is closed, alice is untouched.
    let (status, _) = ask(proxy.control, Method::DELETE, &route_path("b0b"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        bob_tunnel.closed_by_proxy(PROMPTLY).await,
        "the proxy closes bob's tunnel"
    );
    assert_eq!(served(&[("x-dev", "bob")]).await, "cluster");
    assert_eq!(served(&[("x-dev", "alice")]).await, "alice");
    let (status, body) = ask(proxy.control, Method::DELETE, &route_path("b0b"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    bob_tunnel.close().await;
    alice_tunnel.close().await;
}

#[tokio::test]
async fn an_abandoned_route_gives_its_requests_back_until_its_laptop_returns() {
    cz_e2e::init_tracing();
    let cluster = spawn_app("cluster", None).await;
    let carol_app = spawn_app("carol", None).await;
    let owner = Session::new();
    let proxy = spawn_proxy(proxy_config(cluster.addr, &[]), &owner.proxy, 0, &[]).await;
    let carol = Session::new();
    // Gone from the start, with no patience: abandoned at once.
    let carol_identity = join(proxy.control, "ca401", &carol, "x-dev:carol", 0)
        .await
        .expect("joins");
    let answer = get(proxy.http, "/", &[("x-dev", "carol")]).await;
    assert_eq!(answer.served_by(), "cluster", "{answer:?}");
    let route = routes(proxy.control)
        .await
        .routes
        .pop()
        .expect("carol's route");
    assert!(route.abandoned && !route.connected, "{route:?}");

    let tunnel = start_tunnel(proxy.tunnel, &carol_identity, carol_app.addr);
    within(PROMPTLY, "carol's tunnel", tunnel.connected())
        .await
        .expect("connects");
    eventually("carol's route to be hers again", PROMPTLY, || async {
        (get(proxy.http, "/", &[("x-dev", "carol")])
            .await
            .served_by()
            == "carol")
            .then_some(())
    })
    .await;
    tunnel.close().await;
}

#[tokio::test]
async fn a_laptop_of_no_joined_session_is_refused() {
    cz_e2e::init_tracing();
    let cluster = spawn_app("cluster", None).await;
    let app = spawn_app("laptop", None).await;
    let owner = Session::new();
    let proxy = spawn_proxy(proxy_config(cluster.addr, &[]), &owner.proxy, 0, &[]).await;
    let stranger = Session::new();
    // Trusting the proxy does not make its certificate one of a session's.
    let identity = stranger
        .laptop
        .clone()
        .trusting(owner.ca.certificate_pem().to_owned());
    let tunnel = start_tunnel(proxy.tunnel, &identity, app.addr);
    let refused = within(PROMPTLY, "the handshake", tunnel.connected()).await;
    assert!(refused.is_err(), "a stranger's laptop must not connect");
    tunnel.close().await;
}

/// A UDP relay between a laptop and the proxy, whose socket can vanish as a killed process's
/// does: the proxy's datagrams to it then meet a closed port.
async fn relay(proxy: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = std::sync::Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let address = socket.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        upstream.connect(proxy).await.expect("connect");
        let mut laptop = None;
        let (mut from_laptop, mut from_proxy) = (vec![0; 65536], vec![0; 65536]);
        loop {
            tokio::select! {
                Ok((len, peer)) = socket.recv_from(&mut from_laptop) => {
                    laptop = Some(peer);
                    let _ = upstream.send(&from_laptop[..len]).await;
                }
                Ok(len) = upstream.recv(&mut from_proxy) => {
                    if let Some(laptop) = laptop {
                        let _ = socket.send_to(&from_proxy[..len], laptop).await;
                    }
                }
            }
        }
    });
    (address, task)
}

#[tokio::test]
async fn a_laptop_that_vanishes_does_not_hold_up_the_others() {
    cz_e2e::init_tracing();
    let cluster = spawn_app("cluster", None).await;
    let (alice_app, carol_app) = (
        spawn_app("alice", None).await,
        spawn_app("carol", None).await,
    );
    let alice = Session::new();
    let flags = ["--header=x-dev:alice", "--session=a11ce"];
    let proxy = spawn_proxy(proxy_config(cluster.addr, &flags), &alice.proxy, 0, &[]).await;
    let alice_tunnel = start_tunnel(proxy.tunnel, &alice.laptop, alice_app.addr);
    let carol = Session::new();
    let carol_identity = join(proxy.control, "ca401", &carol, "x-dev:carol", 3600)
        .await
        .expect("joins");
    let (relayed, relay) = relay(proxy.tunnel).await;
    let carol_tunnel = start_tunnel(relayed, &carol_identity, carol_app.addr);
    for tunnel in [&alice_tunnel, &carol_tunnel] {
        within(PROMPTLY, "a tunnel", tunnel.connected())
            .await
            .expect("connects");
    }
    assert_eq!(
        get(proxy.http, "/", &[("x-dev", "carol")])
            .await
            .served_by(),
        "carol"
    );
    // Carol's process is killed: her datagrams stop, the proxy's meet a closed port.
    relay.abort();
    let _ = relay.await;
    let stuck = tokio::spawn(async move { get(proxy.http, "/", &[("x-dev", "carol")]).await });
    for second in 0..30 {
        let answer = get(proxy.http, "/", &[("x-dev", "alice")]).await;
        assert_eq!(
            answer.served_by(),
            "alice",
            "{second} s after carol vanished: {answer:?}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    stuck.abort();
    std::mem::forget(carol_tunnel);
    alice_tunnel.close().await;
}
