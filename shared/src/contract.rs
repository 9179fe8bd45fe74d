//! The contract between czctl and the cz-proxy it deploys, written once: the proxy's flags and
//! their environment variables, its default ports and port names, where the session Secret is
//! mounted, its admin paths, and the typed state czctl reads from the admin port.
//!
//! czctl builds the proxy's container arguments with [`ProxyArgs::to_args`]; cz-proxy's clap
//! definition names its flags with [`flag`] and [`env`]. A unit test in cz-proxy parses
//! [`ProxyArgs::to_args`] with that definition, so a rename on one side fails a fast test.
//!
//! [`ProxyState`] is served as JSON on [`STATE_PATH`]. Compatible changes add fields (readers
//! ignore unknown ones and default missing ones); an incompatible change bumps
//! [`STATE_VERSION`], which readers check first.

/// The proxy's command-line flags (without the leading `--`).
pub mod flag {
    /// The intercepted HTTP port.
    pub const HTTP_PORT: &str = "http-port";
    /// Where requests without the intercept header go.
    pub const UPSTREAM: &str = "upstream";
    /// Another port, passed through as raw TCP.
    pub const PASSTHROUGH: &str = "passthrough";
    /// UDP port of the QUIC tunnel.
    pub const TUNNEL_PORT: &str = "tunnel-port";
    /// TCP port (on 127.0.0.1) of the QUIC tunnel over a port-forward stream.
    pub const CARRIER_PORT: &str = "carrier-port";
    /// TCP port of the admin endpoints.
    pub const ADMIN_PORT: &str = "admin-port";
    /// Directory of the session's certificates.
    pub const TLS_DIR: &str = "tls-dir";
    /// The intercept rule.
    pub const HEADER: &str = "header";
    /// The session whose route the rule is.
    pub const SESSION: &str = "session";
    /// How long a route's matching requests wait for a laptop that went away.
    pub const ORPHAN_AFTER: &str = "orphan-after";
    /// TCP port (on 127.0.0.1) of the control channel.
    pub const CONTROL_PORT: &str = "control-port";
    /// How long the proxy keeps accepting after SIGTERM.
    pub const SHUTDOWN_DELAY: &str = "shutdown-delay";
    /// How long a matching request waits for a laptop.
    pub const RECONNECT_GRACE: &str = "reconnect-grace";
}

/// The environment variable beside each flag of [`flag`].
pub mod env {
    /// `--http-port`.
    pub const HTTP_PORT: &str = "CZ_HTTP_PORT";
    /// `--upstream`.
    pub const UPSTREAM: &str = "CZ_UPSTREAM";
    /// `--passthrough` (entries separated by commas).
    pub const PASSTHROUGH: &str = "CZ_PASSTHROUGH";
    /// `--tunnel-port`.
    pub const TUNNEL_PORT: &str = "CZ_TUNNEL_PORT";
    /// `--carrier-port`.
    pub const CARRIER_PORT: &str = "CZ_CARRIER_PORT";
    /// `--admin-port`.
    pub const ADMIN_PORT: &str = "CZ_ADMIN_PORT";
    /// `--tls-dir`.
    pub const TLS_DIR: &str = "CZ_TLS_DIR";
    /// `--header`.
    pub const HEADER: &str = "CZ_HEADER";
    /// `--session`.
    pub const SESSION: &str = "CZ_SESSION";
    /// `--orphan-after`.
    pub const ORPHAN_AFTER: &str = "CZ_ORPHAN_AFTER";
    /// `--control-port`.
    pub const CONTROL_PORT: &str = "CZ_CONTROL_PORT";
    /// `--shutdown-delay`.
    pub const SHUTDOWN_DELAY: &str = "CZ_SHUTDOWN_DELAY";
    /// `--reconnect-grace`.
    pub const RECONNECT_GRACE: &str = "CZ_RECONNECT_GRACE";
}

/// How long a route's laptop may be gone before its matching requests go to the original pods
/// instead of getting 503 (`czctl service intercept --orphan-after`, `cz-proxy --orphan-after`).
pub const DEFAULT_ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long the proxy keeps accepting connections after SIGTERM, while the cluster's kube-proxy
/// and ingress controllers stop sending it new ones (seconds on a real cluster).
pub const DEFAULT_SHUTDOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// The tunnel's UDP port unless the intercepted Service uses it.
pub const DEFAULT_TUNNEL_PORT: u16 = 7443;
/// The port-forward carrier's TCP port (on the pod's loopback) unless the intercepted Service
/// uses it.
pub const DEFAULT_CARRIER_PORT: u16 = 7444;
/// The admin port unless the intercepted Service uses it.
pub const DEFAULT_ADMIN_PORT: u16 = 9901;
/// Where the session Secret (ca.crt, tls.crt, tls.key) is mounted in the proxy container.
pub const TLS_DIR: &str = "/etc/cz-proxy/tls";
/// Name of the tunnel's container port.
pub const TUNNEL_PORT_NAME: &str = "cz-tunnel";
/// Name of the port-forward carrier's container port (TCP, listening on the pod's loopback only:
/// `pods/portforward` reaches it, the cluster network does not).
pub const CARRIER_PORT_NAME: &str = "cz-carrier";
/// Name of the admin container port: czctl finds the admin port by it.
pub const ADMIN_PORT_NAME: &str = "cz-admin";
/// Liveness: the process serves.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness: the proxy accepts traffic (503 once a drain has closed its listeners); the
/// Deployment's probe.
pub const READY_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// [`ProxyState`] as JSON.
pub const STATE_PATH: &str = "/state";
/// The version of [`ProxyState`] this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// A raw TCP port the proxy passes through: it listens on `listen_port` and connects to
/// `target` (`HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughArg {
    /// Port the proxy listens on.
    pub listen_port: u16,
    /// Where connections go, `HOST:PORT`.
    pub target: String,
}

/// A pass-through entry that is not `LISTEN_PORT=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not LISTEN_PORT=HOST:PORT, e.g. 9090=shadow.ns:9090")]
pub struct BadPassthrough(pub String);

impl std::str::FromStr for PassthroughArg {
    type Err = BadPassthrough;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPassthrough(text.to_owned());
        let (port, target) = text.split_once('=').ok_or_else(bad)?;
        let listen_port = port.trim().parse().map_err(|_| bad())?;
        let target = target.trim();
        match target.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Self {
                listen_port,
                target: target.to_owned(),
            }),
            _ => Err(bad()),
        }
    }
}

/// What czctl tells a proxy it deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    /// The intercepted container port.
    pub http_port: u16,
    /// The original pods, `HOST:PORT` (the shadow Service).
    pub upstream: String,
    /// The Service's other TCP ports.
    pub passthrough: Vec<PassthroughArg>,
    /// UDP port of the tunnel.
    pub tunnel_port: u16,
    /// TCP port (on 127.0.0.1) of the tunnel over a port-forward stream.
    pub carrier_port: u16,
    /// TCP port of the admin endpoints.
    pub admin_port: u16,
    /// The intercept rule, `NAME:VALUE`.
    pub header: String,
    /// The session whose rule it is.
    pub session: String,
    /// The rule's orphan delay.
    pub orphan_after: std::time::Duration,
    /// TCP port (on 127.0.0.1) of the control channel.
    pub control_port: u16,
    /// How long the proxy keeps accepting after SIGTERM (whole seconds).
    pub shutdown_delay: std::time::Duration,
    /// How long a matching request waits for a laptop (whole seconds).
    pub reconnect_grace: std::time::Duration,
}

impl ProxyArgs {
    /// The container's arguments, `--flag=value` each; the TLS directory is [`TLS_DIR`].
    pub fn to_args(&self) -> Vec<String> {
        let arg = |flag: &str, value: &dyn std::fmt::Display| format!("--{flag}={value}");
        let mut args = vec![
            arg(flag::HTTP_PORT, &self.http_port),
            arg(flag::UPSTREAM, &self.upstream),
            arg(flag::TUNNEL_PORT, &self.tunnel_port),
            arg(flag::CARRIER_PORT, &self.carrier_port),
            arg(flag::ADMIN_PORT, &self.admin_port),
            arg(flag::TLS_DIR, &TLS_DIR),
            arg(flag::HEADER, &self.header),
            arg(flag::SESSION, &self.session),
            arg(
                flag::ORPHAN_AFTER,
                &humantime::format_duration(self.orphan_after),
            ),
            arg(flag::CONTROL_PORT, &self.control_port),
            arg(
                flag::SHUTDOWN_DELAY,
                &format_args!("{}s", self.shutdown_delay.as_secs()),
            ),
            arg(
                flag::RECONNECT_GRACE,
                &format_args!("{}s", self.reconnect_grace.as_secs()),
            ),
        ];
        args.extend(self.passthrough.iter().map(|p| {
            arg(
                flag::PASSTHROUGH,
                &format_args!("{}={}", p.listen_port, p.target),
            )
        }));
        args
    }
}

/// What the proxy reports on [`STATE_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyState {
    /// [`STATE_VERSION`] of the writer.
    pub version: u32,
    /// Whether a laptop is connected through the tunnel.
    #[serde(default)]
    pub laptop_connected: bool,
    /// Whether the proxy accepts traffic (false while draining).
    #[serde(default)]
    pub ready: bool,
}

/// Why a [`ProxyState`] could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The body is not the JSON of a state.
    #[error("the proxy's state is not valid JSON of a state")]
    Malformed(#[source] serde_json::Error),
    /// The proxy writes a version this build does not read.
    #[error("the proxy reports state version {found}, this czctl reads version {STATE_VERSION}; use a czctl and cz-proxy of the same release")]
    Version {
        /// The proxy's version.
        found: u32,
    },
}

impl ProxyState {
    /// A state of this build's [`STATE_VERSION`].
    pub fn new(laptop_connected: bool, ready: bool) -> Self {
        Self {
            version: STATE_VERSION,
            laptop_connected,
            ready,
        }
    }

    /// The JSON served on [`STATE_PATH`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a state of numbers and booleans serializes")
    }

    /// Reads a state, checking its version first.
    pub fn from_json(body: &[u8]) -> Result<Self, StateError> {
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: u32,
        }
        let Versioned { version } = serde_json::from_slice(body).map_err(StateError::Malformed)?;
        if version != STATE_VERSION {
            return Err(StateError::Version { found: version });
        }
        serde_json::from_slice(body).map_err(StateError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_ignores_unknown_fields() {
        let state = ProxyState::new(true, true);
        assert_eq!(
            ProxyState::from_json(state.to_json().as_bytes()).expect("reads"),
            state
        );
        let newer = br#"{"version":1,"laptopConnected":false,"ready":true,"later":42}"#;
        assert_eq!(
            ProxyState::from_json(newer).expect("reads"),
            ProxyState::new(false, true)
        );
    }

    #[test]
    fn another_version_or_garbage_is_refused() {
        assert!(matches!(
            ProxyState::from_json(br#"{"version":2,"laptopConnected":true}"#),
            Err(StateError::Version { found: 2 })
        ));
        assert!(matches!(
            ProxyState::from_json(b"cz_proxy_tunnel_connected 1"),
            Err(StateError::Malformed(_))
        ));
        assert!(matches!(
            ProxyState::from_json(br#"{"version":1,"laptopConnected":"yes"}"#),
            Err(StateError::Malformed(_))
        ));
    }

    #[test]
    fn args_name_every_flag_once() {
        let args = ProxyArgs {
            http_port: 8080,
            upstream: "10.0.0.1:80".into(),
            passthrough: vec![PassthroughArg {
                listen_port: 9090,
                target: "10.0.0.1:9090".into(),
            }],
            tunnel_port: DEFAULT_TUNNEL_PORT,
            carrier_port: DEFAULT_CARRIER_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            header: "x-c6o-intercept:yes".into(),
            session: "0123abcd".into(),
            orphan_after: DEFAULT_ORPHAN_AFTER,
            control_port: crate::control::DEFAULT_CONTROL_PORT,
            shutdown_delay: DEFAULT_SHUTDOWN_DELAY,
            reconnect_grace: std::time::Duration::from_secs(10),
        }
        .to_args();
        assert!(args.contains(&"--orphan-after=15m".to_owned()));
        assert!(args.contains(&"--passthrough=9090=10.0.0.1:9090".to_owned()));
        assert!(args.contains(&"--shutdown-delay=5s".to_owned()));
        assert!(args.contains(&format!("--tls-dir={TLS_DIR}")));
    }

    #[test]
    fn passthrough_entries_parse_or_say_the_expected_form() {
        let parsed: PassthroughArg = "9091 = 10.0.0.1:91".parse().expect("valid");
        assert_eq!(
            (parsed.listen_port, parsed.target.as_str()),
            (9091, "10.0.0.1:91")
        );
        for bad in ["9090", "x=h:1", "9090=h", "9090=:80", "9090=h:port"] {
            let error = bad.parse::<PassthroughArg>().expect_err(bad);
            assert!(
                error.to_string().contains("LISTEN_PORT=HOST:PORT"),
                "{error}"
            );
        }
    }
}
