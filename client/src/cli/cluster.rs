//! Which cluster: `--kubeconfig/-k` (else `KUBECONFIG`, else `~/.kube/config`) and `--context`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Cluster selection flags.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Path to a specific kubeconfig file to use for cluster credentials. Defaults to using the
    /// KUBECONFIG environment variable, then ~/.kube/config.
    #[arg(short = 'k', long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// A client, and the context's namespace (`default` when it names none), as kubectl does.
    pub async fn connect(&self) -> anyhow::Result<(kube::Client, String)> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("could not read the kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .context(
            "could not load cluster credentials; pass -k/--kubeconfig FILE or set KUBECONFIG",
        )?;
        let namespace = config.default_namespace.clone();
        let client = czctl::kube_client(config).context("could not create a Kubernetes client")?;
        Ok((client, namespace))
    }
}
