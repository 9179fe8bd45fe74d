//! The request inspector's flags (`--inspect`, `--inspect-allow-remote`, `--inspect-secrets`),
//! shared by `service intercept` and `tunnel connect`, and starting it beside a tunnel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use anyhow::Context;
use clap::Args;
use czctl::inspect::{self, Inspector, InspectorConfig, PORT_TRIES};
use czctl::Tunnel;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::output::Output;

/// The inspector's flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Serve the request inspector (a web page and JSON API listing, replaying and exporting
    /// intercepted requests) at ADDR: `HOST:PORT`, a port (on 127.0.0.1), or `off`. If the port
    /// is taken, one of the next free ones. Default for `service intercept`: 127.0.0.1:4040;
    /// for `tunnel connect`: off.
    #[arg(long, value_name = "ADDR|off", env = "CZ_INSPECT")]
    inspect: Option<InspectAddress>,
    /// Allow --inspect on an address other than loopback. Whoever reaches it sees the
    /// intercepted requests (and, with --inspect-secrets, their credentials) and can replay them
    /// to your app.
    #[arg(long)]
    inspect_allow_remote: bool,
    /// Show the values of Authorization, Cookie, Set-Cookie and Proxy-Authorization headers in
    /// the inspector and its exports (masked by default).
    #[arg(long)]
    inspect_secrets: bool,
}

/// `--inspect`'s value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InspectAddress {
    Off,
    At(SocketAddr),
}

impl FromStr for InspectAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        if let Ok(port) = text.parse::<u16>() {
            return Ok(Self::At(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
        }
        text.parse().map(Self::At).map_err(|_| {
            format!("{text:?} is not HOST:PORT (an IP address and a port), a port, or `off`")
        })
    }
}

/// A bound inspector address, not yet serving: bound before the intercept starts, so a taken
/// or refused address fails before anything changes in the cluster.
pub struct InspectorListener {
    listener: TcpListener,
    show_secrets: bool,
}

/// A serving inspector; dropping it stops the server.
pub struct RunningInspector {
    /// The page's address, `http://HOST:PORT`.
    pub url: String,
    /// Stops the server when dropped.
    _stop: tokio_util::sync::DropGuard,
}

impl InspectArgs {
    /// Binds the inspector's address (`default` when `--inspect` is not given; `None` is off).
    /// An address given that cannot be bound is an error; the default is only warned about
    /// (the intercept matters more than its inspector).
    pub async fn bind(
        &self,
        default: Option<SocketAddr>,
        output: &Output,
    ) -> anyhow::Result<Option<InspectorListener>> {
        match (self.inspect, default) {
            (Some(InspectAddress::Off), _) | (None, None) => Ok(None),
            (Some(InspectAddress::At(address)), _) => self.bind_at(address).await.map(Some),
            (None, Some(address)) => match self.bind_at(address).await {
                Ok(listener) => Ok(Some(listener)),
                Err(error) => {
                    output.warn(format_args!("the request inspector is off: {error:#}"));
                    Ok(None)
                }
            },
        }
    }

    async fn bind_at(&self, address: SocketAddr) -> anyhow::Result<InspectorListener> {
        if !address.ip().is_loopback() && !self.inspect_allow_remote {
            anyhow::bail!(
                "--inspect {address} would show intercepted requests to anyone who reaches {}; add --inspect-allow-remote if that is what you want, or use a loopback address such as 127.0.0.1:{}",
                address.ip(),
                address.port()
            );
        }
        let listener = inspect::bind(address).await.with_context(|| {
            format!(
                "could not serve the request inspector on {address} (nor on the {} ports after it); choose another with --inspect HOST:PORT, or --inspect off",
                PORT_TRIES - 1
            )
        })?;
        Ok(InspectorListener {
            listener,
            show_secrets: self.inspect_secrets,
        })
    }
}

impl InspectorListener {
    /// Captures `tunnel`'s exchanges (replays go to `local_app`) and serves the inspector.
    pub fn start(self, tunnel: &Tunnel, local_app: SocketAddr) -> anyhow::Result<RunningInspector> {
        let mut config = InspectorConfig::new(local_app);
        config.show_secrets = self.show_secrets;
        let inspector = Inspector::new(config);
        tunnel.inspect(&inspector)?;
        let address = self.listener.local_addr()?;
        let host = match address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let stop = CancellationToken::new();
        tokio::spawn(inspector.serve(self.listener, stop.clone()));
        Ok(RunningInspector {
            url: format!("http://{}", SocketAddr::new(host, address.port())),
            _stop: stop.drop_guard(),
        })
    }
}

impl RunningInspector {
    /// The summary line's sentence about it.
    pub fn sentence(inspector: Option<&Self>) -> String {
        match inspector {
            Some(inspector) => format!(" Inspect intercepted requests at {}.", inspector.url),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Output = Output { quiet: true };

    fn args(inspect: Option<InspectAddress>, inspect_allow_remote: bool) -> InspectArgs {
        InspectArgs {
            inspect,
            inspect_allow_remote,
            inspect_secrets: false,
        }
    }

    fn at(address: &str) -> Option<InspectAddress> {
        Some(InspectAddress::At(address.parse().expect("an address")))
    }

    #[test]
    fn addresses_ports_and_off_parse() {
        assert_eq!("off".parse(), Ok(InspectAddress::Off));
        assert_eq!("4041".parse().ok(), at("127.0.0.1:4041"));
        assert_eq!("[::1]:9000".parse().ok(), at("[::1]:9000"));
        assert!("localhost:4040".parse::<InspectAddress>().is_err());
    }

    #[tokio::test]
    async fn a_non_loopback_address_needs_saying_so() {
        let refused = args(at("0.0.0.0:0"), false).bind(None, &QUIET).await;
        let error = refused.err().expect("refused");
        assert!(
            error.to_string().contains("--inspect-allow-remote"),
            "{error}"
        );
        let allowed = args(at("0.0.0.0:0"), true).bind(None, &QUIET).await;
        assert!(allowed.expect("bound").is_some());
    }

    #[tokio::test]
    async fn off_and_no_default_bind_nothing() {
        let default = Some("127.0.0.1:0".parse().expect("an address"));
        let off = args(Some(InspectAddress::Off), false);
        assert!(off.bind(default, &QUIET).await.expect("no error").is_none());
        let unset = args(None, false);
        assert!(unset.bind(None, &QUIET).await.expect("no error").is_none());
        assert!(unset.bind(default, &QUIET).await.expect("bound").is_some());
    }

    #[tokio::test]
    async fn a_taken_default_only_turns_the_inspector_off_and_a_taken_choice_fails() {
        // A port and every one tried after it, taken (by this test or by someone else).
        let first = TcpListener::bind("127.0.0.1:0").await.expect("bound");
        let start = first.local_addr().expect("an address");
        let mut taken = vec![first];
        for offset in 1..PORT_TRIES {
            let mut next = start;
            next.set_port(start.port() + offset);
            if let Ok(listener) = TcpListener::bind(next).await {
                taken.push(listener);
            }
        }
        let default = args(None, false).bind(Some(start), &QUIET).await;
        assert!(default.expect("only a warning").is_none());
        let chosen = args(Some(InspectAddress::At(start)), false);
        let error = chosen.bind(None, &QUIET).await.err().expect("an error");
        assert!(format!("{error:#}").contains("--inspect off"), "{error:#}");
        drop(taken);
    }
}
