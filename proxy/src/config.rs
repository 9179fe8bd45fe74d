//! Command-line and environment configuration of `cz-proxy`, validated once at start-up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cz_shared::contract::{self, env, flag};
use cz_shared::{InterceptRule, DEFAULT_RULE};

/// A raw TCP port forward: `LISTEN_PORT=HOST:PORT` (the form czctl writes).
pub type Passthrough = contract::PassthroughArg;

/// The in-cluster proxy of a czctl intercept session.
///
/// Serves the intercepted port of a Service (HTTP/1.1 and h2c): requests carrying the intercept
/// header go through the QUIC tunnel to the developer's laptop, every other request to the
/// original pods. The Service's other ports are passed through as raw TCP. Every flag can also
/// be set by the environment variable named beside it. Certificates and keys are read only from
/// files (`--tls-dir`), never from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "cz-proxy", version)]
pub struct Config {
    /// IP address every listener binds to.
    #[arg(long, env = "CZ_BIND_IP", default_value = "0.0.0.0")]
    pub bind_ip: IpAddr,

    /// TCP port of the intercepted HTTP port (the container port the Service targets).
    #[arg(long = flag::HTTP_PORT, env = env::HTTP_PORT)]
    pub http_port: u16,

    /// Where requests without the intercept header go, as HOST:PORT: the original pods, behind
    /// the session's shadow Service.
    #[arg(long = flag::UPSTREAM, env = env::UPSTREAM)]
    pub upstream: String,

    /// Another port of the Service, passed through as raw TCP: LISTEN_PORT=HOST:PORT. Repeat
    /// the flag, or separate entries with commas in the environment variable.
    #[arg(long = flag::PASSTHROUGH, env = env::PASSTHROUGH, value_delimiter = ',')]
    pub passthrough: Vec<Passthrough>,

    /// UDP port of the QUIC tunnel the developer's czctl dials.
    #[arg(long = flag::TUNNEL_PORT, env = env::TUNNEL_PORT, default_value_t = contract::DEFAULT_TUNNEL_PORT)]
    pub tunnel_port: u16,

    /// TCP port of /healthz, /readyz, /state (JSON) and Prometheus /metrics.
    #[arg(long = flag::ADMIN_PORT, env = env::ADMIN_PORT, default_value_t = contract::DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,

    /// Directory holding the session's ca.crt, tls.crt and tls.key (a mounted Secret).
    #[arg(long = flag::TLS_DIR, env = env::TLS_DIR, default_value = contract::TLS_DIR)]
    pub tls_dir: PathBuf,

    /// Intercept rule NAME:VALUE: requests carrying this header go to the laptop. Names match
    /// case-insensitively with `_` equal to `-`; values case-insensitively after trimming.
    #[arg(long = flag::HEADER, env = env::HEADER, default_value = DEFAULT_RULE)]
    pub header: InterceptRule,

    /// How long a matching request waits for the laptop to reconnect before it gets 503.
    #[arg(long, env = "CZ_RECONNECT_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconnect_grace: Duration,

    /// On SIGTERM, how long in-flight requests may take to finish before the proxy exits.
    #[arg(long, env = "CZ_DRAIN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How long a client may take to send a request's headers before the connection is closed;
    /// also how long an idle keep-alive connection stays open (NGINX's client_header_timeout).
    #[arg(long, env = "CZ_HEADER_READ_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head accepted, in bytes; larger ones get 431 (at least 8192).
    #[arg(long, env = "CZ_MAX_HEADER_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,

    /// How long connecting to the upstream may take before the request gets 504.
    #[arg(long, env = "CZ_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// HTTP worker threads (NGINX's worker_processes), each an event loop of its own with its own
    /// upstream connections; one per CPU when unset.
    #[arg(long, env = "CZ_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
}

impl Config {
    /// How many HTTP workers to run: `--worker-threads`, or one per CPU.
    pub fn workers(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_and_defaults() {
        let config = Config::try_parse_from([
            "cz-proxy",
            "--http-port=8080",
            "--upstream=shadow.demo:80",
            "--passthrough=9090=shadow.demo:9090",
            "--passthrough=9091=10.0.0.1:91",
            "--header=X-MY-HEADER:ME",
        ])
        .expect("valid flags");
        assert_eq!(config.passthrough.len(), 2);
        assert_eq!(config.passthrough[1].target, "10.0.0.1:91");
        assert_eq!(config.header.to_string(), "x-my-header:ME");
        assert_eq!(config.reconnect_grace, Duration::from_secs(5));
        assert_eq!(config.tunnel_port, 7443);
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        let error = Config::try_parse_from([
            "cz-proxy",
            "--http-port=1",
            "--upstream=u:1",
            "--passthrough=9090",
        ])
        .expect_err("bad passthrough");
        assert!(
            error.to_string().contains("LISTEN_PORT=HOST:PORT"),
            "{error}"
        );
        let error = Config::try_parse_from([
            "cz-proxy",
            "--http-port=1",
            "--upstream=u:1",
            "--header=nocolon",
        ])
        .expect_err("bad rule");
        assert!(error.to_string().contains("NAME:VALUE"), "{error}");
    }

    #[test]
    fn parses_the_args_czctl_gives_its_deployment() {
        let sent = contract::ProxyArgs {
            http_port: 8080,
            upstream: "10.96.0.7:80".into(),
            passthrough: vec![
                Passthrough {
                    listen_port: 9090,
                    target: "10.96.0.7:9090".into(),
                },
                Passthrough {
                    listen_port: 9091,
                    target: "10.96.0.7:91".into(),
                },
            ],
            tunnel_port: 7444,
            admin_port: 9902,
            header: "x-my-header:me".into(),
        };
        let config =
            Config::try_parse_from(std::iter::once("cz-proxy".to_owned()).chain(sent.to_args()))
                .expect("cz-proxy accepts what czctl writes");
        let received = contract::ProxyArgs {
            http_port: config.http_port,
            upstream: config.upstream,
            passthrough: config.passthrough,
            tunnel_port: config.tunnel_port,
            admin_port: config.admin_port,
            header: config.header.to_string(),
        };
        assert_eq!(received, sent);
        assert_eq!(config.tls_dir, PathBuf::from(contract::TLS_DIR));
    }

    #[test]
    fn help_documents_every_flag_with_its_variable() {
        use clap::CommandFactory;
        let help = Config::command().render_long_help().to_string();
        for variable in [
            "CZ_HTTP_PORT",
            "CZ_UPSTREAM",
            "CZ_PASSTHROUGH",
            "CZ_TLS_DIR",
            "CZ_HEADER",
            "CZ_DRAIN_TIMEOUT",
        ] {
            assert!(help.contains(variable), "{variable} missing from --help");
        }
    }
}
