//! `czctl session close` and `czctl session list`.

use std::time::Duration;

use clap::Args;
use czctl::session::{self, Closing};

use super::cluster::ClusterArgs;
use super::output::Output;

/// Which sessions a clean-up closes: the caller's own unless told.
#[derive(Debug, Args)]
pub struct ClosingArgs {
    /// Close this session only (its id is in `czctl session list`), whoever started it.
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    session: Option<String>,
    /// Close every session, other developers' live ones included. Without it, and without
    /// --session, only your own sessions (started as this user on this host) are closed.
    #[arg(long)]
    all: bool,
}

impl ClosingArgs {
    /// Whether --session or --all was given.
    pub fn is_given(&self) -> bool {
        self.session.is_some() || self.all
    }

    /// The sessions to close.
    pub fn closing(&self) -> Closing {
        match (&self.session, self.all) {
            (Some(session), _) => Closing::Session(session.clone()),
            (None, true) => Closing::All,
            (None, false) => Closing::Own,
        }
    }
}

/// Arguments of `session list`.
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

/// Arguments of `session close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    #[command(flatten)]
    scope: SessionArgs,
    #[command(flatten)]
    closing: ClosingArgs,
}

impl SessionArgs {
    async fn connect(&self) -> anyhow::Result<(kube::Client, Option<String>)> {
        let (client, context_namespace) = self.cluster.connect().await?;
        let namespace =
            (!self.all_namespaces).then(|| self.namespace.clone().unwrap_or(context_namespace));
        Ok((client, namespace))
    }
}

/// Closes the sessions asked for in scope: detaches their routes, and where no session is left,
/// restores the Service and removes czctl's objects.
pub async fn close(args: CloseArgs) -> anyhow::Result<()> {
    let output = Output {
        quiet: args.scope.quiet,
    };
    let (client, namespace) = args.scope.connect().await?;
    let closing = args.closing.closing();
    let closed = session::close(&client, namespace.as_deref(), None, &closing, &mut |step| {
        output.step(step)
    })
    .await?;
    let scope = namespace.map_or("all namespaces".to_owned(), |ns| format!("namespace {ns}"));
    output.info(format_args!(
        "{closed} session(s) closed in {scope} ({}); every intercept left without a session was restored and every object verified as created by czctl for it removed",
        describe(&closing)
    ));
    Ok(())
}

/// What `closing` covers, for the summary line.
pub fn describe(closing: &Closing) -> String {
    match closing {
        Closing::Own => "your own; --session ID or --all for others'".to_owned(),
        Closing::Session(id) => format!("session {id}"),
        Closing::All => "every session".to_owned(),
    }
}

/// Prints every session of every intercepted Service in scope, with what its proxy says.
pub async fn list(args: SessionArgs) -> anyhow::Result<()> {
    let (client, namespace) = args.connect().await?;
    let sessions = session::list(&client, namespace.as_deref()).await?;
    if sessions.is_empty() {
        println!("no intercepts");
        return Ok(());
    }
    println!(
        "{:<28} {:<9} {:<24} {:>6} {:>10} {:<20} {:>8} {:<14} {:>8} STATE",
        "SERVICE", "SESSION", "HEADER", "PORT", "LOCAL PORT", "OWNER", "AGE", "CARRIER", "REQUESTS"
    );
    let mut abandoned = Vec::new();
    for info in sessions {
        let routes = session::routes(&client, &info).await;
        if let Err(error) = &routes {
            tracing::debug!(%error, service = %info.service, "could not read the proxy's routes");
        }
        for member in info.record.members() {
            let route = routes
                .as_ref()
                .ok()
                .and_then(|routes| routes.routes.iter().find(|r| r.session == member.session));
            let mut state = match route {
                None if routes.is_ok() => "NO ROUTE (run session close)".to_owned(),
                None => "unknown (proxy unreachable: may you port-forward to it?)".to_owned(),
                Some(route) if route.connected => "connected".to_owned(),
                Some(route) => {
                    let away = seconds(route.disconnected_seconds.unwrap_or_default());
                    if route.abandoned {
                        abandoned.push((info.namespace.clone(), member.session.clone()));
                        format!("ABANDONED (away {away}; requests go to the pods)")
                    } else {
                        format!("disconnected {away} ago")
                    }
                }
            };
            if let Some(route) = route.filter(|r| r.conflicts > 0) {
                state.push_str(&format!(
                    "; {} request(s) also matched another session's rule (refused with 409)",
                    route.conflicts
                ));
            }
            println!(
                "{:<28} {:<9} {:<24} {:>6} {:>10} {:<20} {:>8} {:<14} {:>8} {state}",
                format!("{}/{}", info.namespace, info.service),
                member.session,
                member.header,
                info.record.remote_port,
                member.local_port,
                member.owner,
                age(&member.since),
                route
                    .and_then(|r| r.carrier.clone())
                    .unwrap_or_else(|| "-".into()),
                route.map_or("-".to_owned(), |r| r.requests.to_string()),
            );
        }
    }
    for (namespace, session) in abandoned {
        println!("close abandoned session {session} with: czctl session close -n {namespace} --session {session}");
    }
    Ok(())
}

fn seconds(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn age(since: &str) -> String {
    humantime::parse_rfc3339(since)
        .ok()
        .and_then(|since| since.elapsed().ok())
        .map_or("?".to_owned(), |age| seconds(age.as_secs()))
}
