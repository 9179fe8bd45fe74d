//! Peers of different major versions: they meet on the hello-only ALPN, tell each other their
//! versions, and part with a message naming both, instead of failing without a word.

use cz_e2e::client::get;
use cz_e2e::next_major::{negotiated_alpn, next_laptop, NextProxy, NEXT_SOFTWARE};
use cz_e2e::{
    init_tracing, proxy_config, spawn_app, spawn_proxy, start_tunnel, within, Session, PROMPTLY,
};
use cz_shared::protocol::{CloseCode, ALPN_HELLO_ONLY, PROTOCOL_VERSION};
use czctl::TunnelError;
use http::StatusCode;

#[tokio::test]
async fn czctl_names_both_versions_when_the_proxy_is_a_major_version_ahead() {
    init_tracing();
    let session = Session::new();
    let laptop = spawn_app("laptop", None).await;
    let mut next_proxy = NextProxy::spawn(&session.proxy);
    let tunnel = start_tunnel(next_proxy.addr, &session.laptop, laptop.addr);
    let error = within(PROMPTLY, "czctl's verdict on the proxy", tunnel.connected())
        .await
        .expect_err("czctl refuses a proxy of another major version");
    assert!(matches!(*error, TunnelError::VersionMismatch(_)), "{error}");
    let expected = format!(
        "version mismatch: proxy {NEXT_SOFTWARE} (tunnel protocol {}.0), client {} (tunnel protocol {PROTOCOL_VERSION})",
        PROTOCOL_VERSION.major + 1,
        env!("CARGO_PKG_VERSION"),
    );
    assert!(error.to_string().starts_with(&expected), "{error}");
    assert!(
        error
            .to_string()
            .contains("use a czctl of the same version"),
        "{error}"
    );

    let (alpn, hello) = within(PROMPTLY, "czctl's hello", next_proxy.hellos_rx.recv())
        .await
        .expect("a hello");
    assert_eq!(alpn, ALPN_HELLO_ONLY, "met on the hello-only ALPN");
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
}

#[tokio::test]
async fn the_proxy_tells_a_newer_laptop_its_version_and_never_sends_it_traffic() {
    init_tracing();
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let proxy = spawn_proxy(
        proxy_config(cluster.addr, &["--reconnect-grace=300ms"]),
        &session.proxy,
        0,
        &[],
    )
    .await;
    let (connection, hello) = within(
        PROMPTLY,
        "the hello exchange",
        next_laptop(proxy.tunnel, &session.laptop),
    )
    .await;
    assert_eq!(negotiated_alpn(&connection), ALPN_HELLO_ONLY);
    assert_eq!(hello.protocol, PROTOCOL_VERSION);
    assert_eq!(hello.software, env!("CARGO_PKG_VERSION"));

    // While the newer laptop is still connected, it is not the session's laptop.
    let answer = within(
        PROMPTLY,
        "an answer",
        get(proxy.http, "/", &[("x-c6o-intercept", "yes")]),
    )
    .await;
    assert_eq!(
        (answer.status, answer.served_by()),
        (StatusCode::SERVICE_UNAVAILABLE, "proxy"),
        "no intercepted request goes to a laptop of another version"
    );
    // A laptop that does not hang up is hung up on, saying why.
    let reason = within(
        PROMPTLY,
        "the proxy to close the connection",
        connection.closed(),
    )
    .await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                CloseCode::VersionMismatch.into(),
                "{close:?}"
            )
        }
        other => panic!("closed for another reason: {other}"),
    }
}
