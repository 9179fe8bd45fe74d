//! The data path on loopback, watched: a stand-in "cluster" app, a stand-in "laptop" app,
//! cz-proxy in front of the cluster app and the czctl tunnel to the laptop app, all on
//! 127.0.0.1. It sends one request each way, prints who answered, and keeps serving (for curl)
//! until Ctrl-C, or exits at once with `--once`.

use std::time::Duration;

use cz_e2e::client::get;
use cz_e2e::{proxy_config, spawn_app, spawn_proxy, start_tunnel, Session};
use czctl::TunnelEvent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = std::env::args().any(|arg| arg == "--once");
    let session = Session::new();
    let cluster = spawn_app("cluster", None).await;
    let laptop = spawn_app("laptop", None).await;
    let proxy = spawn_proxy(proxy_config(cluster.addr, &[]), &session.proxy, 0, &[]).await;
    println!(
        "cluster app  (the original pods)      http://{}",
        cluster.addr
    );
    println!(
        "laptop app   (your local program)     http://{}",
        laptop.addr
    );
    println!(
        "cz-proxy     (the intercepted port)   http://{}  tunnel udp://{}",
        proxy.http, proxy.tunnel
    );

    let tunnel = start_tunnel(proxy.tunnel, &session.laptop, laptop.addr);
    let mut events = tunnel.events();
    let connected = tunnel
        .connected()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    println!(
        "czctl tunnel connected over {} (QUIC, mutual TLS with this session's certificates)\n",
        connected.path
    );

    for (headers, label) in [
        (
            &[("X-C6O-INTERCEPT", "yes")][..],
            "with    X-C6O-INTERCEPT: yes",
        ),
        (&[][..], "without the header          "),
    ] {
        let answer = get(proxy.http, "/hello", headers).await;
        println!(
            "GET /hello {label} -> {} answered by {:8} {:?}",
            answer.status,
            answer.served_by(),
            answer.body
        );
    }
    if once {
        tunnel.close().await;
        proxy.stop().await;
        return Ok(());
    }
    println!("\nTry it yourself:");
    println!(
        "  curl -H 'X-C6O-INTERCEPT: yes' http://{}/anything",
        proxy.http
    );
    println!("  curl http://{}/anything", proxy.http);
    println!("Intercepted requests are listed below. Ctrl-C to stop.");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => {
                if let Ok(TunnelEvent::Request(request)) = event {
                    println!("  laptop served {} {} -> {} in {:?}", request.method, request.path, request.status, request.duration);
                }
            }
        }
    }
    tunnel.close().await;
    tokio::time::timeout(Duration::from_secs(30), proxy.stop()).await?;
    Ok(())
}
