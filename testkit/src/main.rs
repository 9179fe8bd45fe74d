//! `cz-testkit`: runs the loopback cluster until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cz_testkit::{Cluster, ClusterOptions};

/// A loopback Kubernetes stand-in for trying and testing czctl without a cluster (a test
/// stand-in, not a product).
#[derive(Parser)]
#[command(name = "cz-testkit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the cluster and run until Ctrl-C.
    Up {
        /// Where to write the kubeconfig for kubectl and czctl.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Create the sample: namespace demo, Deployment and Service echo.
        #[arg(long)]
        sample: bool,
        /// The cz-proxy binary to run for proxy images (default: beside cz-testkit).
        #[arg(long, env = "CZ_PROXY_BIN")]
        proxy_binary: Option<PathBuf>,
        /// How long Services keep forwarding to old endpoints after a change, as kube-proxy
        /// lags on real clusters (e.g. `1s`).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        endpoint_lag: Duration,
    },
    /// Run the echo server on 127.0.0.1 (a stand-in for the app on your laptop).
    Echo {
        /// Port to listen on.
        #[arg(long)]
        port: u16,
        /// The name it answers with.
        #[arg(long, default_value = "laptop")]
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (kubeconfig, sample, options) = match Cli::parse().command {
        Command::Up {
            kubeconfig,
            sample,
            proxy_binary,
            endpoint_lag,
        } => (
            kubeconfig,
            sample,
            ClusterOptions {
                proxy_binary,
                endpoint_lag,
            },
        ),
        Command::Echo { port, name } => {
            let stop = tokio_util::sync::CancellationToken::new();
            cz_testkit::echo::serve([127, 0, 0, 1].into(), &[port], &[], name, stop.clone())
                .await?;
            stopped().await;
            return Ok(());
        }
    };
    let cluster = Cluster::start(options).await?;
    cluster
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("could not write the kubeconfig to {}", kubeconfig.display()))?;
    if sample {
        cluster.create_sample()?;
        cluster.wait_ready(Duration::from_secs(60)).await?;
    }
    for line in cluster.service_lines() {
        println!("{line}");
    }
    println!("ready");
    stopped().await;
    cluster.stop().await;
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, so pods' processes are stopped either way.
async fn stopped() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
