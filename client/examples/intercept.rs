//! Intercepting a Service from your own program: requests to `demo/echo` carrying
//! `x-c6o-intercept: yes` are served by whatever listens on 127.0.0.1:3000 until Ctrl-C, then
//! everything is restored. Uses the current kubeconfig context.
//!
//! ```text
//! cargo run -p czctl --example intercept -- [NAMESPACE] [SERVICE] [LOCAL_PORT]
//! ```

use std::time::Duration;

use czctl::{session, Intercept, InterceptOptions, TunnelEvent, TunnelMode, DEFAULT_RULE};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let namespace = args.next().unwrap_or_else(|| "demo".into());
    let service = args.next().unwrap_or_else(|| "echo".into());
    let local_port: u16 = args.next().map_or(Ok(3000), |port| port.parse())?;

    // kube's client with TCP_NODELAY, which the tunnel's port-forward carrier needs.
    let client = czctl::kube_client(kube::Config::infer().await?)?;
    for existing in session::list(&client, Some(&namespace)).await? {
        println!(
            "{}/{} is intercepted by {}",
            existing.namespace, existing.service, existing.record.owner
        );
    }

    let options = InterceptOptions {
        namespace,
        service,
        remote_port: None,
        local_port: Some(local_port),
        rule: DEFAULT_RULE.parse()?,
        proxy_image: concat!("ghcr.io/czctl/cz-proxy:", env!("CARGO_PKG_VERSION")).into(),
        image_pull_secret: None,
        timeout: Duration::from_secs(120),
        tunnel_endpoint: None,
        // Direct UDP when the proxy pod answers at once, else a port-forward through the API
        // server.
        tunnel: TunnelMode::Auto,
        orphan_after: czctl::DEFAULT_ORPHAN_AFTER,
    };
    // Without a Ctrl-C handler, set-up runs to its end instead of being cut short.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let intercept = Intercept::start(client, options, |step| println!("{step}"), ctrl_c).await?;
    let mut events = intercept.tunnel().events();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            while let Ok(event) = events.recv().await {
                if let TunnelEvent::Request(request) = event {
                    println!("{} {} -> {}", request.method, request.path, request.status);
                }
            }
        } => {}
    }
    intercept.stop(|step| println!("{step}")).await?;
    Ok(())
}
