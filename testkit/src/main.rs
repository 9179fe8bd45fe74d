//! `cz-testkit`: runs the loopback cluster until Ctrl-C.

use std::path::{Path, PathBuf};
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
        /// Add a user NAME bound to the Roles/ClusterRoles in ROLEFILE (JSON: one object, an
        /// array or a List, e.g. from `kubectl create role ... --dry-run=client -o json`); the
        /// kubeconfig gets a context NAME for it. Repeatable.
        #[arg(long = "user", value_name = "NAME=ROLEFILE", value_parser = parse_user)]
        users: Vec<(String, PathBuf)>,
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
    let (kubeconfig, sample, users, options) = match Cli::parse().command {
        Command::Up {
            kubeconfig,
            sample,
            proxy_binary,
            endpoint_lag,
            users,
        } => (
            kubeconfig,
            sample,
            users,
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
    if sample {
        cluster.create_sample()?;
    }
    let mut config = cluster.kubeconfig().to_owned();
    for (name, file) in &users {
        let roles = read_roles(file)?;
        let token = cluster.add_user(name, &roles).with_context(|| {
            format!(
                "could not add user {name} from {} (a Role's namespace must exist: \
                 --sample makes demo)",
                file.display()
            )
        })?;
        config = cz_testkit::auth::add_context(&config, name, &token, false)?;
    }
    std::fs::write(&kubeconfig, config)
        .with_context(|| format!("could not write the kubeconfig to {}", kubeconfig.display()))?;
    if sample {
        cluster.wait_ready(Duration::from_secs(60)).await?;
    }
    for (name, _) in &users {
        println!("user {name} context {name}");
    }
    for line in cluster.service_lines() {
        println!("{line}");
    }
    println!("ready");
    stopped().await;
    cluster.stop().await;
    Ok(())
}

/// `NAME=ROLEFILE`.
fn parse_user(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "{text:?} is not NAME=ROLEFILE (e.g. dev=dev-role.json)"
        )),
    }
}

/// The Roles and ClusterRoles in a JSON file: one object, an array, or a `List`.
fn read_roles(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("could not read the role file {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON (write it with `kubectl create role ... --dry-run=client -o json`)",
            file.display()
        )
    })?;
    Ok(match value {
        serde_json::Value::Array(items) => items,
        list if list.get("items").is_some_and(serde_json::Value::is_array) => {
            list["items"].as_array().cloned().unwrap_or_default()
        }
        role => vec![role],
    })
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
