//! Command-line and environment configuration of `cz-proxy`, validated once at start-up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cz_shared::contract::{self, env, flag};
use cz_shared::{InterceptRule, DEFAULT_RULE};

use crate::trusted::TrustedProxy;

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

    /// TCP port of the QUIC tunnel over a port-forward stream (czctl's default carrier). It
    /// listens on 127.0.0.1 (unless --bind-ip names one address): only `pods/portforward`,
    /// which the API server authorizes, reaches it.
    #[arg(long = flag::CARRIER_PORT, env = env::CARRIER_PORT, default_value_t = contract::DEFAULT_CARRIER_PORT)]
    pub carrier_port: u16,

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
    #[arg(long = flag::RECONNECT_GRACE, env = env::RECONNECT_GRACE, default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconnect_grace: Duration,

    /// On SIGTERM, how long the proxy keeps accepting connections (with /readyz failing, every
    /// HTTP/1 response closing its connection and HTTP/2 connections sent GOAWAY) before it
    /// stops listening: the time kube-proxy and ingress controllers take to stop sending it new
    /// connections once the cluster no longer lists it (a preStop sleep, built in).
    #[arg(long = flag::SHUTDOWN_DELAY, env = env::SHUTDOWN_DELAY, default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// After the shutdown delay, how long in-flight requests may take to finish before the
    /// proxy exits.
    #[arg(long, env = "CZ_DRAIN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How long a client may take to send a request's headers before the connection is closed,
    /// from accept for the first request (protocol detection and the HTTP/2 preface included);
    /// also how long an idle keep-alive connection stays open, HTTP/1.1 or HTTP/2 (NGINX's
    /// client_header_timeout and keepalive_timeout).
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

    /// Peers whose forwarding headers are kept and appended to (a load balancer or ingress in
    /// front of the Service), as CIDR blocks or addresses, separated by commas: e.g.
    /// 10.0.0.0/8,fd00::/8. Every other peer's X-Forwarded-For/-Proto/-Host, X-Real-IP and
    /// Forwarded are replaced by what the proxy saw. None by default.
    #[arg(long, env = "CZ_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<TrustedProxy>,

    /// Most connections open at once on the intercepted HTTP port; beyond it new connections are
    /// reset at once and counted in cz_proxy_connections_refused_total. The default fits the
    /// pod's 128 Mi memory limit with room to spare.
    #[arg(long, env = "CZ_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most connections open at once on each pass-through port, refused beyond as on the HTTP
    /// port.
    #[arg(long, env = "CZ_MAX_PASSTHROUGH_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_passthrough_connections: u32,

    /// How long a pass-through connection may carry no byte either way before both ends are
    /// closed (NGINX's proxy_timeout).
    #[arg(long, env = "CZ_PASSTHROUGH_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub passthrough_idle_timeout: Duration,

    /// Send and receive buffer size of every TCP socket the proxy accepts or opens, in bytes (the
    /// kernel reserves twice it). It bounds what one client that stops reading, or one upstream
    /// that stops answering, pins in the kernel, whatever the host's autotuning allows.
    #[arg(long, env = "CZ_SOCKET_BUFFER_BYTES", default_value_t = cz_forward::DEFAULT_SOCKET_BUFFER,
          value_parser = clap::value_parser!(u32).range(4096..))]
    pub socket_buffer_bytes: u32,
    /// How long an intercepted request may wait for its turn on the tunnel (a place under
    /// --tunnel-max-requests, then a stream the laptop accepts) before it gets 503 or 504. Short,
    /// as connecting to the upstream is: a laptop that takes no new request is stuck or overloaded.
    // 5s: the tunnel's counterpart of --upstream-connect-timeout, and of the same length.
    #[arg(long, env = "CZ_TUNNEL_SLOT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tunnel_slot_timeout: Duration,

    /// How long the laptop may take to start answering a request, counted from the end of the
    /// request's body, before the request is cancelled with 504 (NGINX's proxy_read_timeout).
    /// Raise it while debugging: an app stopped at a breakpoint answers late.
    #[arg(long, env = "CZ_TUNNEL_RESPONSE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub tunnel_response_timeout: Duration,

    /// Most intercepted requests (upgraded connections included) carried to the laptop at once;
    /// more wait up to --tunnel-slot-timeout for one to finish, then get 503. Bounds what a
    /// laptop that stops answering makes the proxy hold.
    // 256: the tunnel reader of each request in flight holds at most one 64 KiB read of its
    // response body outside QUIC's flow control, so 256 hold at most 16 MiB, as much again as
    // the tunnel connection's receive window. Below the 1024 streams czctl allows
    // (`MAX_CONCURRENT_REQUESTS`), so with czctl it is this limit, not a stream slot, that a
    // flood meets; well above the 200 concurrent requests the data-path tests send.
    #[arg(long, env = "CZ_TUNNEL_MAX_REQUESTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tunnel_max_requests: u32,
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

    /// Held by tests that set `CZ_*` variables or check defaults: the environment is the process's.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn parses_flags_and_defaults() {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
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
        assert_eq!(config.shutdown_delay, contract::DEFAULT_SHUTDOWN_DELAY);
        assert_eq!(config.tunnel_port, 7443);
        assert_eq!(config.carrier_port, 7444);
        assert_eq!(config.tunnel_slot_timeout, Duration::from_secs(5));
        assert_eq!(config.tunnel_response_timeout, Duration::from_secs(60));
        assert_eq!(config.tunnel_max_requests, 256);
        assert!(
            config.tunnel_max_requests < cz_shared::tls::MAX_CONCURRENT_REQUESTS,
            "a flood meets the proxy's limit before the laptop's stream limit"
        );
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
        let error = Config::try_parse_from([
            "cz-proxy",
            "--http-port=1",
            "--upstream=u:1",
            "--tunnel-max-requests=0",
        ])
        .expect_err("no request could ever pass");
        assert!(
            error.to_string().contains("--tunnel-max-requests"),
            "{error}"
        );
    }

    /// Every flag, the variable that also sets it, and a value other than its default.
    const EVERY_FLAG: [(&str, &str, &str); 24] = [
        ("bind-ip", "CZ_BIND_IP", "127.0.0.9"),
        ("http-port", "CZ_HTTP_PORT", "8081"),
        ("upstream", "CZ_UPSTREAM", "shadow.env:81"),
        ("passthrough", "CZ_PASSTHROUGH", "9090=a:90,9091=b:91"),
        ("tunnel-port", "CZ_TUNNEL_PORT", "7444"),
        ("carrier-port", "CZ_CARRIER_PORT", "7445"),
        ("admin-port", "CZ_ADMIN_PORT", "9902"),
        ("tls-dir", "CZ_TLS_DIR", "/env/tls"),
        ("header", "CZ_HEADER", "x-env:on"),
        ("reconnect-grace", "CZ_RECONNECT_GRACE", "7s"),
        ("shutdown-delay", "CZ_SHUTDOWN_DELAY", "3s"),
        ("drain-timeout", "CZ_DRAIN_TIMEOUT", "8s"),
        ("header-read-timeout", "CZ_HEADER_READ_TIMEOUT", "9s"),
        ("max-header-bytes", "CZ_MAX_HEADER_BYTES", "10000"),
        (
            "upstream-connect-timeout",
            "CZ_UPSTREAM_CONNECT_TIMEOUT",
            "11s",
        ),
        ("worker-threads", "CZ_WORKER_THREADS", "3"),
        (
            "trusted-proxies",
            "CZ_TRUSTED_PROXIES",
            "10.0.0.0/8,fd00::/8",
        ),
        ("max-connections", "CZ_MAX_CONNECTIONS", "12"),
        (
            "max-passthrough-connections",
            "CZ_MAX_PASSTHROUGH_CONNECTIONS",
            "13",
        ),
        (
            "passthrough-idle-timeout",
            "CZ_PASSTHROUGH_IDLE_TIMEOUT",
            "14s",
        ),
        ("socket-buffer-bytes", "CZ_SOCKET_BUFFER_BYTES", "15000"),
        ("tunnel-slot-timeout", "CZ_TUNNEL_SLOT_TIMEOUT", "12s"),
        (
            "tunnel-response-timeout",
            "CZ_TUNNEL_RESPONSE_TIMEOUT",
            "13m",
        ),
        ("tunnel-max-requests", "CZ_TUNNEL_MAX_REQUESTS", "14"),
    ];

    /// Asserts that `config` holds the values of [`EVERY_FLAG`].
    fn assert_every_value(config: &Config, source: &str) {
        let passthrough = [("9090", "a:90"), ("9091", "b:91")].map(|(port, target)| Passthrough {
            listen_port: port.parse().expect("port"),
            target: target.to_owned(),
        });
        assert_eq!(config.bind_ip.to_string(), "127.0.0.9", "{source}");
        assert_eq!(config.http_port, 8081, "{source}");
        assert_eq!(config.upstream, "shadow.env:81", "{source}");
        assert_eq!(config.passthrough, passthrough, "{source}");
        assert_eq!(config.tunnel_port, 7444, "{source}");
        assert_eq!(config.carrier_port, 7445, "{source}");
        assert_eq!(config.admin_port, 9902, "{source}");
        assert_eq!(config.tls_dir, PathBuf::from("/env/tls"), "{source}");
        assert_eq!(config.header.to_string(), "x-env:on", "{source}");
        assert_eq!(config.reconnect_grace, Duration::from_secs(7), "{source}");
        assert_eq!(config.shutdown_delay, Duration::from_secs(3), "{source}");
        assert_eq!(config.drain_timeout, Duration::from_secs(8), "{source}");
        assert_eq!(
            config.header_read_timeout,
            Duration::from_secs(9),
            "{source}"
        );
        assert_eq!(config.max_header_bytes, 10000, "{source}");
        let connect_timeout = config.upstream_connect_timeout;
        assert_eq!(connect_timeout, Duration::from_secs(11), "{source}");
        assert_eq!(config.worker_threads, Some(3), "{source}");
        let trusted: Vec<_> = config
            .trusted_proxies
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(trusted, ["10.0.0.0/8", "fd00::/8"], "{source}");
        assert_eq!(config.max_connections, 12, "{source}");
        assert_eq!(config.max_passthrough_connections, 13, "{source}");
        let idle = config.passthrough_idle_timeout;
        assert_eq!(idle, Duration::from_secs(14), "{source}");
        assert_eq!(config.socket_buffer_bytes, 15000, "{source}");
        let slot_timeout = config.tunnel_slot_timeout;
        assert_eq!(slot_timeout, Duration::from_secs(12), "{source}");
        let response_timeout = config.tunnel_response_timeout;
        assert_eq!(response_timeout, Duration::from_secs(13 * 60), "{source}");
        assert_eq!(config.tunnel_max_requests, 14, "{source}");
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
            carrier_port: 7445,
            admin_port: 9902,
            header: "x-my-header:me".into(),
            shutdown_delay: Duration::from_secs(7),
            reconnect_grace: Duration::from_secs(12),
        };
        let config =
            Config::try_parse_from(std::iter::once("cz-proxy".to_owned()).chain(sent.to_args()))
                .expect("cz-proxy accepts what czctl writes");
        let received = contract::ProxyArgs {
            http_port: config.http_port,
            upstream: config.upstream,
            passthrough: config.passthrough,
            tunnel_port: config.tunnel_port,
            carrier_port: config.carrier_port,
            admin_port: config.admin_port,
            header: config.header.to_string(),
            shutdown_delay: config.shutdown_delay,
            reconnect_grace: config.reconnect_grace,
        };
        assert_eq!(received, sent);
        assert_eq!(config.tls_dir, PathBuf::from(contract::TLS_DIR));
    }

    #[test]
    fn every_flag_is_documented_with_its_variable() {
        use clap::CommandFactory;
        let command = Config::command();
        let documented: Vec<_> = command
            .get_arguments()
            .filter_map(|arg| Some((arg.get_long()?, arg.get_env()?.to_str()?)))
            .collect();
        let expected: Vec<_> = EVERY_FLAG.iter().map(|(f, v, _)| (*f, *v)).collect();
        assert_eq!(documented, expected);
        let help = Config::command().render_long_help().to_string();
        for (flag, variable, _) in EVERY_FLAG {
            assert!(help.contains(&format!("--{flag}")), "--{flag} missing");
            assert!(
                help.contains(&format!("[env: {variable}")),
                "{variable} missing"
            );
        }
    }

    #[test]
    fn every_flag_takes_effect() {
        let mut args = vec!["cz-proxy".to_owned()];
        for (flag, _, value) in EVERY_FLAG {
            let repeated = ["passthrough", "trusted-proxies"].contains(&flag);
            for value in value.split(',').filter(|_| repeated) {
                args.push(format!("--{flag}={value}"));
            }
            if !repeated {
                args.push(format!("--{flag}={value}"));
            }
        }
        let config = Config::try_parse_from(args).expect("valid flags");
        assert_every_value(&config, "flags");
    }

    #[test]
    fn every_variable_takes_effect() {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        for (_, variable, value) in EVERY_FLAG {
            std::env::set_var(variable, value);
        }
        let config = Config::try_parse_from(["cz-proxy"]);
        for (_, variable, _) in EVERY_FLAG {
            std::env::remove_var(variable);
        }
        assert_every_value(&config.expect("valid variables"), "variables");
    }
}
