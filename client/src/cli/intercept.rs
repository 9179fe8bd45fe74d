//! `czctl service intercept`: as documented in the reference, plus what users need.

use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args};
use czctl::{
    session, Intercept, InterceptOptions, InterceptRule, TunnelEvent, TunnelMode, DEFAULT_RULE,
};

use super::cluster::ClusterArgs;
use super::output::Output;

/// The proxy image: the project's, at this czctl's version.
const DEFAULT_PROXY_IMAGE: &str = concat!("ghcr.io/czctl/cz-proxy:", env!("CARGO_PKG_VERSION"));

/// Arguments of `czctl service intercept`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct InterceptArgs {
    /// The name of the service you want to intercept.
    service: String,
    /// The Kubernetes namespace that contains the service. Defaults to the kubeconfig context's
    /// namespace, else 'default' (as kubectl does).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The port of the service to intercept. Optional if the service only exposes a single port.
    #[arg(short = 'r', long = "remotePort", value_name = "PORT")]
    remote_port: Option<u16>,
    /// The local port intercepted requests are forwarded to. Defaults to the remote port.
    #[arg(short = 'l', long = "localPort", value_name = "PORT")]
    local_port: Option<u16>,
    /// Custom intercept header and value, NAME:VALUE. `-h` works too (use --help for help).
    #[arg(short = 'x', short_alias = 'h', long, value_name = "NAME:VALUE", default_value = DEFAULT_RULE)]
    header: InterceptRule,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Close and clean up an existing session of this service (also one left by a crash).
    #[arg(short = 'c', long)]
    clean: bool,
    /// Only display error messages.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The cz-proxy image to run in the cluster (for air-gapped clusters: your registry's copy).
    #[arg(long, env = "CZ_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// Image pull secret for the proxy image.
    #[arg(long, value_name = "SECRET")]
    image_pull_secret: Option<String>,
    /// How long the proxy may take to become ready.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// What carries the tunnel: `port-forward` through the API server (all a laptop usually
    /// reaches), `direct` UDP to the proxy pod (or --tunnel-endpoint), or `auto`: direct if it
    /// answers at once, else port-forward.
    #[arg(long, env = "CZ_TUNNEL", value_enum, default_value_t = TunnelMode::Auto)]
    tunnel: TunnelMode,
    /// Dial the tunnel at HOST:PORT (UDP) instead of the proxy pod's IP; with `--tunnel auto`,
    /// only there.
    #[arg(long, value_name = "HOST:PORT")]
    tunnel_endpoint: Option<String>,
    /// Print the objects that would be created and the change to the service, as YAML; change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Runs the intercept until Ctrl-C or SIGTERM, then restores everything.
pub async fn run(args: InterceptArgs) -> anyhow::Result<()> {
    let mut interrupts =
        super::Interrupts::catch().context("could not catch Ctrl-C and SIGTERM")?;
    let output = Output { quiet: args.quiet };
    let (client, context_namespace) = args.cluster.connect().await?;
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    if args.clean {
        let closed = session::close(
            &client,
            Some(&namespace),
            Some(&args.service),
            &mut |step| output.step(step),
        )
        .await?;
        output.info(format_args!(
            "cleaned up {namespace}/{}: {closed} intercept(s) closed, and every object verified as created by czctl for it was removed (session Secrets go with their shadow services)",
            args.service
        ));
        return Ok(());
    }
    let options = InterceptOptions {
        namespace: namespace.clone(),
        service: args.service.clone(),
        remote_port: args.remote_port,
        local_port: args.local_port,
        rule: args.header.clone(),
        proxy_image: args.proxy_image.clone(),
        image_pull_secret: args.image_pull_secret.clone(),
        timeout: args.timeout,
        tunnel_endpoint: args.tunnel_endpoint.clone(),
        tunnel: args.tunnel,
    };
    if args.dry_run {
        let plan = Intercept::plan(&client, &options).await?;
        let patch = serde_json::json!({
            "service": format!("{namespace}/{}", args.service),
            "patch": {"spec": {"selector": plan.record.proxy_selector}, "metadata": {"annotations": {czctl::INTERCEPT_ANNOTATION: "<the record below>"}}},
            "record": plan.record,
        });
        for document in [
            serde_saphyr::to_string(&plan.secret),
            serde_saphyr::to_string(&plan.shadow),
            serde_saphyr::to_string(&plan.deployment),
            serde_saphyr::to_string(&patch),
        ] {
            println!(
                "---\n{}",
                document.context("could not print YAML")?.trim_end()
            );
        }
        return Ok(());
    }
    let intercept =
        Intercept::start(client, options, |step| output.step(step), interrupts.recv()).await?;
    let record = intercept.record();
    output.info(format_args!(
        "Intercepting {namespace}/{} port {}: requests with header {} go to localhost:{}; all others keep going to the cluster. Press Ctrl-C to stop.",
        args.service, record.remote_port, args.header, record.local_port
    ));
    let mut events = intercept.tunnel().events();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if !matches!(event, TunnelEvent::Connected { .. }) {
                output.event(&event);
            }
        }
    });
    interrupts.recv().await;
    printer.abort();
    output.info("stopping: restoring the service first");
    intercept.stop(|step| output.step(step)).await?;
    output.info(format_args!(
        "intercept of {namespace}/{} ended; the service is restored",
        args.service
    ));
    Ok(())
}
