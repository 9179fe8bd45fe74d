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

    /// The session whose rule --header is: its laptop presents a certificate of the CA in
    /// --tls-dir. Other sessions join (and leave) over the control port.
    #[arg(long = flag::SESSION, env = env::SESSION, default_value = "local")]
    pub session: String,

    /// How long a route's matching requests wait for a laptop that went away before they go to
    /// the original pods instead of getting 503 (for --header's route; joining sessions set
    /// their own). A laptop that comes back takes its route back.
    #[arg(long = flag::ORPHAN_AFTER, env = env::ORPHAN_AFTER, default_value = "15m", value_parser = humantime::parse_duration)]
    pub orphan_after: Duration,

    /// TCP port of the control channel, on which other developers' czctl join and leave. Like
    /// --carrier-port it listens on 127.0.0.1 (unless --bind-ip names one address): only
    /// `pods/portforward`, which the API server authorizes, reaches it.
    #[arg(long = flag::CONTROL_PORT, env = env::CONTROL_PORT, default_value_t = cz_shared::control::DEFAULT_CONTROL_PORT)]
    pub control_port: u16,

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
mod tests;
