//! `cz-testkit`: runs the loopback cluster until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cz_testkit::network::NetworkMode;
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
        /// Where pods and ClusterIPs live: `isolated` in network namespaces this machine cannot
        /// reach (as on a real cluster: port-forward and NodePorts are the way in; needs root),
        /// `shared` on this machine's loopback, `auto` isolated when possible.
        #[arg(long, value_enum, default_value_t = NetworkMode::Auto)]
        network: NetworkMode,
    },
    /// Run a command inside the cluster network, as a pod would (e.g. `curl` to a ClusterIP).
    Exec {
        /// The kubeconfig of the cluster (default: KUBECONFIG; needed only when several
        /// clusters run).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
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
            network,
        } => (
            kubeconfig,
            sample,
            users,
            ClusterOptions {
                proxy_binary,
                endpoint_lag,
                network,
            },
        ),
        Command::Exec {
            kubeconfig,
            command,
        } => std::process::exit(exec(kubeconfig.as_deref(), &command)?),
        Command::Echo { port, name } => {
            let stop = tokio_util::sync::CancellationToken::new();
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("could not listen on 127.0.0.1:{port}"))?;
            cz_testkit::echo::serve(vec![listener], Vec::new(), name, stop.clone());
            stopped().await;
            return Ok(());
        }
    };
    let cluster = Cluster::start(options).await?;
    match (cluster.network_namespace(), cluster.network_notice()) {
        (Some(namespace), _) => println!("network isolated {namespace}"),
        (None, Some(notice)) => println!("{notice}"),
        (None, None) => println!("network shared"),
    }
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

/// Runs `command` in the cluster network of the cluster `kubeconfig` points at; returns its exit
/// code.
fn exec(kubeconfig: Option<&Path>, command: &[std::ffi::OsString]) -> anyhow::Result<i32> {
    let api = kubeconfig
        .map(|path| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read the kubeconfig {}", path.display()))?;
            let config: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a kubeconfig written by cz-testkit",
                    path.display()
                )
            })?;
            config
                .pointer("/clusters/0/cluster/server")
                .and_then(serde_json::Value::as_str)
                .and_then(|server| server.strip_prefix("https://"))
                .map(str::to_owned)
                .with_context(|| format!("{} names no API server", path.display()))
        })
        .transpose()?;
    let mut line: Vec<std::ffi::OsString> =
        match cz_testkit::address_block::find_cluster_network(api.as_deref())? {
            Some(namespace) => vec![
                "nsenter".into(),
                format!("--net={}", cz_testkit::netns::path_of(&namespace).display()).into(),
                "--".into(),
            ],
            // A shared network is this machine's own.
            None => Vec::new(),
        };
    line.extend(command.iter().cloned());
    let status = std::process::Command::new(&line[0])
        .args(&line[1..])
        .status()
        .with_context(|| format!("could not run {:?}", line[0]))?;
    Ok(status.code().unwrap_or(128))
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
