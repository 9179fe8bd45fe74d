//! Command-line interface: argument types and dispatch. Human output goes to stdout (silenced by
//! `--quiet`), errors to stderr; logs are separate and follow `RUST_LOG`.

mod cluster;
mod config;
mod dry_run;
mod inspect;
mod intercept;
mod output;
mod session;
mod terminal;
mod tunnel;

use std::path::PathBuf;

use clap::{ArgMatches, Args, Parser, Subcommand};

/// Redirect selected traffic of a Kubernetes Service to a program on your laptop.
#[derive(Debug, Parser)]
#[command(name = "czctl", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with Services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List or close intercept sessions (including ones a crash left behind).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Low-level tunnel commands, for a cz-proxy you run yourself.
    #[command(subcommand)]
    Tunnel(TunnelCommand),
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Intercept traffic of a Service and redirect requests carrying the intercept header to
    /// this machine; everything else keeps going to the in-cluster pods.
    Intercept(Box<intercept::InterceptArgs>),
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// Close your sessions (or --session ID, or --all): detach their routes; where no session is
    /// left, restore the Service and remove everything czctl created (idempotent).
    Close(session::CloseArgs),
    /// List every session of every intercepted Service: header, owner, local port, carrier,
    /// whether its laptop is connected or since when not, requests served.
    List(session::SessionArgs),
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
    #[arg(short, long)]
    pub quiet: bool,
}

/// Writes out the lines czctl queued for the terminal; before it exits.
pub fn flush_output() {
    terminal::flush();
}

/// Runs the parsed command; `matches` are what `cli` was parsed from (they tell which settings
/// came from flags and variables, and which are defaults a config file may replace).
pub async fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Service(ServiceCommand::Intercept(args)) => {
            let matches = matches
                .subcommand_matches("service")
                .and_then(|service| service.subcommand_matches("intercept"))
                .expect("the matches of the command parsed as `service intercept`");
            intercept::run(*args, matches).await
        }
        Command::Session(SessionCommand::Close(args)) => session::close(args).await,
        Command::Session(SessionCommand::List(args)) => session::list(args).await,
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

/// Ctrl-C (every OS) and SIGTERM (Unix), caught from the moment this is created (so a signal
/// that arrives while czctl is busy is not lost, and never kills it half-way).
pub struct Interrupts {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
    #[cfg(windows)]
    ctrl_break: tokio::signal::windows::CtrlBreak,
}

impl Interrupts {
    /// Starts catching the signals.
    pub fn catch() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(windows)]
        {
            Ok(Self {
                ctrl_c: tokio::signal::windows::ctrl_c()?,
                ctrl_break: tokio::signal::windows::ctrl_break()?,
            })
        }
    }

    /// Waits for the next Ctrl-C (or SIGTERM, or Ctrl-Break on Windows).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(windows)]
        tokio::select! {
            _ = self.ctrl_c.recv() => {}
            _ = self.ctrl_break.recv() => {}
        }
    }
}
