//! `czctl service intercept`: as documented in the reference, plus what users need.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, ArgMatches, Args};
use czctl::{session, Intercept, InterceptOptions, InterceptRule, Left, TunnelMode, DEFAULT_RULE};

use super::cluster::ClusterArgs;
use super::config::{self, ConfigError};
use super::dry_run::{self, OutputFormat};
use super::inspect::{InspectArgs, RunningInspector};
use super::output::Output;
use super::session::{describe, ClosingArgs};

/// The proxy image: the project's, at this czctl's version.
const DEFAULT_PROXY_IMAGE: &str = concat!("ghcr.io/czctl/cz-proxy:", env!("CARGO_PKG_VERSION"));

/// How settings are found, after the flags (`--help`).
const SETTINGS_HELP: &str = "\
Settings a team shares can be set once, in a config file: --config FILE (or CZ_CONFIG), else \
$XDG_CONFIG_HOME/czctl/config.toml, else the platform's config directory \
(~/.config/czctl/config.toml on Linux, ~/Library/Application Support/czctl/config.toml on \
macOS, %APPDATA%\\czctl\\config.toml on Windows). Its keys are the long flags' names: \
proxy-image, image-pull-secret, tunnel, timeout, header; e.g. proxy-image = \"registry.internal/cz-proxy:0.1.0\". \
A flag wins over its CZ_* variable, which wins over the file, which wins over the default.";

/// Arguments of `czctl service intercept`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_help = SETTINGS_HELP)]
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
    #[arg(short = 'x', short_alias = 'h', long, value_name = "NAME:VALUE", env = "CZ_HEADER", default_value = DEFAULT_RULE)]
    header: InterceptRule,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Close and clean up your session of this service (also one left by a crash); with
    /// --session ID or --all, that session or every session (other developers' too).
    #[arg(short = 'c', long)]
    clean: bool,
    #[command(flatten)]
    closing: ClosingArgs,
    /// How long requests matching your header wait for your laptop after it went away (lid
    /// closed, czctl killed) before they go to the in-cluster pods instead of getting 503, so
    /// the environment is whole again for everyone; your laptop takes them back when it returns.
    #[arg(long, value_name = "DURATION", env = "CZ_ORPHAN_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    orphan_after: Duration,
    /// Only display error messages.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The cz-proxy image to run in the cluster (for air-gapped clusters: your registry's copy).
    #[arg(long, env = "CZ_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// The name of the Secret (in the Service's namespace) the cluster pulls the proxy image with.
    #[arg(long, value_name = "SECRET", env = "CZ_IMAGE_PULL_SECRET")]
    image_pull_secret: Option<String>,
    /// How long the proxy may take to become ready, and the tunnel to connect.
    #[arg(long, env = "CZ_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// What carries the tunnel: `port-forward` through the API server (all a laptop usually
    /// reaches), `direct` UDP to the proxy pod (or --tunnel-endpoint), or `auto`: direct if it
    /// answers at once, else port-forward.
    #[arg(long, env = "CZ_TUNNEL", value_enum, default_value_t = TunnelMode::Auto)]
    tunnel: TunnelMode,
    /// Dial the tunnel at HOST:PORT (UDP) instead of the proxy pod's IP; with `--tunnel auto`,
    /// only there.
    #[arg(long, value_name = "HOST:PORT", env = "CZ_TUNNEL_ENDPOINT")]
    tunnel_endpoint: Option<String>,
    /// The config file (see below).
    #[arg(long, value_name = "FILE", env = "CZ_CONFIG")]
    config: Option<PathBuf>,
    /// Print exactly the objects that would be created and the change to the Service (as an
    /// object `kubectl apply --dry-run=client -f -` takes), key material elided; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The format of --dry-run: `yaml` (one document per object) or `json` (a v1 List).
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Yaml, requires = "dry_run")]
    output: OutputFormat,
    #[command(flatten)]
    inspect: Box<InspectArgs>,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

impl InterceptArgs {
    /// Fills in the settings that neither a flag nor a `CZ_*` variable set (as `matches`, the
    /// command's own, tell) from the config file.
    fn with_config(mut self, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let file = config::load(self.config.as_deref())?;
        config::layer(
            matches,
            "proxy_image",
            &mut self.proxy_image,
            file.proxy_image,
        );
        config::layer(
            matches,
            "image_pull_secret",
            &mut self.image_pull_secret,
            file.image_pull_secret.map(Some),
        );
        config::layer(matches, "tunnel", &mut self.tunnel, file.tunnel);
        config::layer(matches, "timeout", &mut self.timeout, file.timeout);
        config::layer(matches, "header", &mut self.header, file.header);
        Ok(self)
    }
}

/// Runs the intercept until Ctrl-C or SIGTERM, then restores everything; `matches` are the
/// command's own, for the config file's place among the settings.
pub async fn run(args: InterceptArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    // --clean uses none of the settings: a broken config file never stands in a clean-up's way.
    if !args.clean && args.closing.is_given() {
        anyhow::bail!("--session and --all choose which sessions --clean closes; add --clean (or use `czctl session close`)");
    }
    let args = if args.clean {
        args
    } else {
        args.with_config(matches)?
    };
    let mut interrupts =
        super::Interrupts::catch().context("could not catch Ctrl-C and SIGTERM")?;
    let output = Output { quiet: args.quiet };
    let (client, context_namespace) = args.cluster.connect().await?;
    let namespace = args.namespace.clone().unwrap_or(context_namespace);
    if args.clean {
        let closing = args.closing.closing();
        let closed = session::close(
            &client,
            Some(&namespace),
            Some(&args.service),
            &closing,
            &mut |step| output.step(step),
        )
        .await?;
        output.info(format_args!(
            "cleaned up {namespace}/{}: {closed} session(s) closed ({}); if no session is left, the service is restored and every object verified as created by czctl for it was removed (session Secrets go with their shadow services)",
            args.service,
            describe(&closing),
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
        orphan_after: args.orphan_after,
    };
    if args.dry_run {
        let plan = Intercept::plan(&client, &options).await?;
        let service = format!("{namespace}/{}", args.service);
        print!("{}", dry_run::render(&plan, &service, args.output)?);
        return Ok(());
    }
    let inspector = args
        .inspect
        .bind(Some(czctl::inspect::DEFAULT_ADDRESS), &output)
        .await?;
    let intercept =
        Intercept::start(client, options, |step| output.step(step), interrupts.recv()).await?;
    let record = intercept.record();
    let local_app = SocketAddr::from((Ipv4Addr::LOCALHOST, record.local_port));
    let inspector = inspector
        .map(|inspector| inspector.start(intercept.tunnel(), local_app))
        .transpose()?;
    output.info(format_args!(
        "Intercepting {namespace}/{} port {}: requests with header {} go to localhost:{}; all others keep going to the cluster.{} Press Ctrl-C to stop.",
        args.service, record.remote_port, args.header, record.local_port,
        RunningInspector::sentence(inspector.as_ref())
    ));
    // From here on a `Connected` event is a reconnect, or the hand-over to a new proxy pod.
    let printing = output.print_events(intercept.tunnel().events());
    interrupts.recv().await;
    printing.store(true, std::sync::atomic::Ordering::Relaxed);
    output.info("stopping: restoring the service first");
    match intercept.stop(|step| output.step(step)).await? {
        Left::StillShared { others } => output.info(format_args!(
            "you left the intercept of {namespace}/{}; it goes on for {others} other session(s)",
            args.service
        )),
        _ => output.info(format_args!(
            "intercept of {namespace}/{} ended; the service is restored",
            args.service
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    /// `czctl service intercept echo ARGS` with the config file `text`: the settings it ends
    /// with.
    fn settings(args: &[&str], text: &str) -> InterceptArgs {
        let path = std::env::temp_dir().join(format!(
            "czctl-config-test-{}-{}.toml",
            std::process::id(),
            args.len()
        ));
        std::fs::write(&path, text).expect("write the config file");
        let config = path.to_str().expect("a UTF-8 path");
        let argv = [
            &["czctl", "service", "intercept", "echo", "--config", config],
            args,
        ]
        .concat();
        let matches = super::super::Cli::command()
            .try_get_matches_from(argv)
            .expect("parses");
        let intercept = matches
            .subcommand_matches("service")
            .and_then(|m| m.subcommand_matches("intercept"))
            .expect("intercept's matches");
        let args = InterceptArgs::from_arg_matches(intercept).expect("intercept's arguments");
        let args = args.with_config(intercept).expect("a valid config file");
        std::fs::remove_file(&path).expect("remove the config file");
        args
    }

    const EVERY_KEY: &str = r#"
        proxy-image = "file/cz-proxy:1"
        image-pull-secret = "file-pull"
        tunnel = "direct"
        timeout = "7m"
        header = "X-File:yes"
    "#;

    #[test]
    fn the_file_sets_every_setting_no_flag_sets() {
        let args = settings(&[], EVERY_KEY);
        assert_eq!(args.proxy_image, "file/cz-proxy:1");
        assert_eq!(args.image_pull_secret.as_deref(), Some("file-pull"));
        assert_eq!(args.tunnel, TunnelMode::Direct);
        assert_eq!(args.timeout, Duration::from_secs(420));
        assert_eq!(args.header.to_string(), "x-file:yes");
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = settings(
            &[
                "--proxy-image",
                "flag/cz-proxy:2",
                "--image-pull-secret",
                "flag-pull",
                "--tunnel",
                "port-forward",
                "--timeout",
                "9s",
                "-x",
                "X-Flag:yes",
            ],
            EVERY_KEY,
        );
        assert_eq!(args.proxy_image, "flag/cz-proxy:2");
        assert_eq!(args.image_pull_secret.as_deref(), Some("flag-pull"));
        assert_eq!(args.tunnel, TunnelMode::PortForward);
        assert_eq!(args.timeout, Duration::from_secs(9));
        assert_eq!(args.header.to_string(), "x-flag:yes");
    }
}
