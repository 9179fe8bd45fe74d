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
    pub async fn bind(
        &self,
        default: Option<SocketAddr>,
    ) -> anyhow::Result<Option<InspectorListener>> {
        let address = match self.inspect {
            Some(InspectAddress::Off) => return Ok(None),
            Some(InspectAddress::At(address)) => address,
            None => match default {
                Some(address) => address,
                None => return Ok(None),
            },
        };
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
        Ok(Some(InspectorListener {
            listener,
            show_secrets: self.inspect_secrets,
        }))
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

    #[test]
    fn addresses_ports_and_off_parse() {
        assert_eq!("off".parse(), Ok(InspectAddress::Off));
        assert_eq!(
            "4041".parse(),
            Ok(InspectAddress::At(
                "127.0.0.1:4041".parse().expect("an address")
            ))
        );
        assert_eq!(
            "[::1]:9000".parse(),
            Ok(InspectAddress::At(
                "[::1]:9000".parse().expect("an address")
            ))
        );
        assert!("localhost:4040".parse::<InspectAddress>().is_err());
    }

    #[tokio::test]
    async fn a_non_loopback_address_needs_saying_so() {
        let args = InspectArgs {
            inspect: Some(InspectAddress::At("0.0.0.0:0".parse().expect("an address"))),
            inspect_allow_remote: false,
            inspect_secrets: false,
        };
        let error = args.bind(None).await.err().expect("refused");
        assert!(
            error.to_string().contains("--inspect-allow-remote"),
            "{error}"
        );
        let allowed = InspectArgs {
            inspect_allow_remote: true,
            ..args
        };
        assert!(allowed.bind(None).await.expect("bound").is_some());
    }

    #[tokio::test]
    async fn off_and_no_default_bind_nothing() {
        let off = InspectArgs {
            inspect: Some(InspectAddress::Off),
            inspect_allow_remote: false,
            inspect_secrets: false,
        };
        let default = Some("127.0.0.1:0".parse().expect("an address"));
        assert!(off.bind(default).await.expect("no error").is_none());
        let unset = InspectArgs {
            inspect: None,
            ..off
        };
        assert!(unset.bind(None).await.expect("no error").is_none());
        assert!(unset.bind(default).await.expect("bound").is_some());
    }
}
