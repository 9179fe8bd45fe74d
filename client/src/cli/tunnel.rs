//! `czctl tunnel connect` and `czctl tunnel certs`: the tunnel without Kubernetes, for a cz-proxy
//! started by hand (and for the loopback demo).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use czctl::{Identity, SessionCa, Tunnel, TunnelConfig};

use super::inspect::{InspectArgs, RunningInspector};
use super::output::Output;
use super::{CommonArgs, IdentityDir};

/// Arguments of `czctl tunnel connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The proxy's tunnel endpoint, HOST:PORT (UDP).
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: String,
    #[command(flatten)]
    identity: IdentityDir,
    /// The local port intercepted requests are forwarded to.
    #[arg(short = 'l', long = "localPort", value_name = "PORT")]
    local_port: u16,
    #[command(flatten)]
    inspect: InspectArgs,
    #[command(flatten)]
    common: CommonArgs,
}

/// Arguments of `czctl tunnel certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to create; gets `proxy/` (for cz-proxy's --tls-dir) and `laptop/` (for
    /// --identity-dir).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Connects and serves until Ctrl-C.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let output = Output {
        quiet: args.common.quiet,
    };
    let identity = Identity::from_dir(&args.identity.path).with_context(|| {
        format!(
            "could not read the laptop's certificates from {}",
            args.identity.path.display()
        )
    })?;
    let local_app = SocketAddr::from((Ipv4Addr::LOCALHOST, args.local_port));
    let mut interrupts =
        super::Interrupts::catch().context("could not catch Ctrl-C and SIGTERM")?;
    let inspector = args.inspect.bind(None, &output).await?;
    let tunnel = Tunnel::start(TunnelConfig {
        proxy: args.endpoint.clone(),
        identity,
        local_app,
    })?;
    let inspector = inspector
        .map(|inspector| inspector.start(&tunnel, local_app))
        .transpose()?;
    let printing = output.print_events(tunnel.events());
    let connected = tokio::select! {
        connected = tunnel.connected() => Some(connected),
        () = interrupts.recv() => None,
    };
    if let Some(connected) = connected {
        connected.map_err(|error| anyhow::anyhow!("{error}"))?;
        output.info(format_args!(
            "intercepted requests now go to {local_app}.{} Press Ctrl-C to stop.",
            RunningInspector::sentence(inspector.as_ref())
        ));
        interrupts.recv().await;
    }
    printing.store(true, std::sync::atomic::Ordering::Relaxed);
    tunnel.close().await;
    output.info("tunnel closed");
    Ok(())
}

/// Writes a fresh session's identities.
pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let ca = SessionCa::generate()?;
    for (name, identity) in [("proxy", ca.issue_proxy()?), ("laptop", ca.issue_client()?)] {
        let dir = args.out.join(name);
        identity
            .write_to_dir(&dir)
            .with_context(|| format!("could not write certificates into {}", dir.display()))?;
    }
    println!(
        "wrote {0}/proxy (cz-proxy --tls-dir) and {0}/laptop (czctl tunnel connect --identity-dir)",
        args.out.display()
    );
    Ok(())
}
