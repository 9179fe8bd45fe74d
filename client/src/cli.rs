//! Command-line interface: argument types and dispatch. Human output goes to stdout (silenced by
//! `--quiet`), errors to stderr; logs are separate and follow `RUST_LOG`.

mod output;
mod tunnel;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Redirect selected traffic of a Kubernetes Service to a program on your laptop.
#[derive(Debug, Parser)]
#[command(name = "czctl", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Low-level tunnel commands, for a cz-proxy you run yourself.
    #[command(subcommand)]
    Tunnel(TunnelCommand),
}

#[derive(Debug, Subcommand)]
enum TunnelCommand {
    /// Connect to a running cz-proxy and serve its intercepted requests from a local port.
    Connect(tunnel::ConnectArgs),
    /// Create a session CA and write the proxy's and the laptop's certificates.
    Certs(tunnel::CertsArgs),
}

/// Flags every command shares.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Only display error messages.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Tunnel(TunnelCommand::Connect(args)) => tunnel::connect(args).await,
        Command::Tunnel(TunnelCommand::Certs(args)) => tunnel::certs(args),
    }
}

/// Directory flag shared by the tunnel commands.
#[derive(Debug, Args)]
pub struct IdentityDir {
    /// Directory with the laptop's ca.crt, tls.crt and tls.key.
    #[arg(long = "identity-dir", value_name = "DIR")]
    pub path: PathBuf,
}
