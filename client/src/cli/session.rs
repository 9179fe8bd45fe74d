//! `czctl session close` and `czctl session list`.

use clap::Args;
use czctl::session;

use super::cluster::ClusterArgs;
use super::output::Output;

/// Arguments of the session commands.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The namespace (default: the kubeconfig context's, else 'default').
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only display error messages.
    #[arg(short = 'q', long)]
    quiet: bool,
}

impl SessionArgs {
    async fn connect(&self) -> anyhow::Result<(kube::Client, Option<String>)> {
        let (client, context_namespace) = self.cluster.connect().await?;
        let namespace =
            (!self.all_namespaces).then(|| self.namespace.clone().unwrap_or(context_namespace));
        Ok((client, namespace))
    }
}

/// Restores every intercepted Service in scope and removes czctl's objects.
pub async fn close(args: SessionArgs) -> anyhow::Result<()> {
    let output = Output { quiet: args.quiet };
    let (client, namespace) = args.connect().await?;
    let closed = session::close(&client, namespace.as_deref(), None, &mut |step| {
        output.step(step)
    })
    .await?;
    let scope = namespace.map_or("all namespaces".to_owned(), |ns| format!("namespace {ns}"));
    output.info(format_args!(
        "{closed} intercept(s) closed in {scope}; every object verified as created by czctl was removed"
    ));
    Ok(())
}

/// Prints the intercepted Services in scope.
pub async fn list(args: SessionArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.connect().await?;
    let sessions = session::list(&client, namespace.as_deref()).await?;
    if sessions.is_empty() {
        println!("no intercepts");
        return Ok(());
    }
    println!(
        "{:<30} {:<28} {:>6} {:>10} {:<24} {:>8} CONNECTED",
        "SERVICE", "HEADER", "PORT", "LOCAL PORT", "OWNER", "AGE"
    );
    for info in sessions {
        let connected = match session::proxy_state(&client, &info).await {
            Ok(state) if state.laptop_connected => "yes",
            Ok(_) => "no",
            Err(error) => {
                tracing::debug!(%error, service = %info.service, "could not read the proxy's state");
                "unknown"
            }
        };
        let age = humantime::parse_rfc3339(&info.record.since)
            .ok()
            .and_then(|since| since.elapsed().ok())
            .map_or("?".to_owned(), |age| {
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
                    .to_string()
            });
        println!(
            "{:<30} {:<28} {:>6} {:>10} {:<24} {:>8} {connected}",
            format!("{}/{}", info.namespace, info.service),
            info.record.header,
            info.record.remote_port,
            info.record.local_port,
            info.record.owner,
            age
        );
    }
    Ok(())
}
