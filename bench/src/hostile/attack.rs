//! The attacks of the suite, each run until stopped while the normal clients keep going: it
//! says when it is in place, and returns what it saw and which of its own checks failed (a bad
//! request must get its answer, not a reset). Every attack closes its sockets when it returns.

mod bad_requests;
mod hold;
mod idle;
mod quic;
mod slow_reader;

use std::fmt;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::victim::Addresses;

/// The first 16 bytes of the HTTP/2 connection preface: enough for a server to stop reading it
/// as HTTP/1.1, not enough to start HTTP/2.
const PARTIAL_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// A TCP listener of the proxy.
#[derive(Debug, Clone, Copy)]
pub enum Port {
    /// The intercepted HTTP port.
    Http,
    /// The raw TCP pass-through port.
    Passthrough,
    /// The admin port.
    Admin,
    /// The tunnel's port-forward carrier.
    Carrier,
}

impl Port {
    /// Its number at `addresses`, if the proxy has it reachable.
    fn number(self, addresses: &Addresses) -> Option<u16> {
        match self {
            Self::Http => Some(addresses.http),
            Self::Passthrough => addresses.passthrough,
            Self::Admin => Some(addresses.admin),
            Self::Carrier => addresses.carrier,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "HTTP port",
            Self::Passthrough => "pass-through port",
            Self::Admin => "admin port",
            Self::Carrier => "carrier port",
        })
    }
}

/// One attack of the suite.
#[derive(Debug, Clone, Copy)]
pub enum Attack {
    /// Connections each sending a request head one byte every few seconds.
    Slowloris(Port),
    /// 2,000 keep-alive connections, each served once, then idle.
    IdleConnections,
    /// Requests with a 200 KB header: a 431 must be read.
    Oversized,
    /// A bad request line, a bad header, garbage after the HTTP/2 preface, a truncated chunked
    /// body: a 400-class answer (a GOAWAY for HTTP/2) must be read.
    Malformed,
    /// TCP connections on every port that never send a byte.
    HalfOpenTcp,
    /// Connections on the HTTP port that send 16 bytes of the HTTP/2 preface and stop.
    PartialPreface,
    /// QUIC Initial packets from many UDP sockets, never continued.
    QuicInitials,
    /// Big downloads on every route whose clients stop reading.
    SlowReaders,
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Slowloris(port) => write!(f, "slowloris on the {port}"),
            Self::IdleConnections => write!(f, "{} idle connections", idle::CONNECTIONS),
            Self::Oversized => f.write_str("oversized header (200 KB)"),
            Self::Malformed => f.write_str("malformed requests"),
            Self::HalfOpenTcp => f.write_str("half-open TCP (silent connections)"),
            Self::PartialPreface => f.write_str("partial HTTP/2 preface"),
            Self::QuicInitials => f.write_str("half-open QUIC handshakes"),
            Self::SlowReaders => f.write_str("clients that stop reading"),
        }
    }
}

/// What an attack saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Its figures, in one line.
    pub figures: String,
    /// Its own checks that failed, one line each saying what was expected.
    pub failures: Vec<String>,
}

impl Attack {
    /// The attacks the proxy at `addresses` is open to, in the order they run.
    pub fn all(addresses: &Addresses) -> Vec<Self> {
        let mut attacks: Vec<Self> = [Port::Http, Port::Passthrough, Port::Admin, Port::Carrier]
            .into_iter()
            .filter(|port| port.number(addresses).is_some())
            .map(Self::Slowloris)
            .collect();
        attacks.extend([
            Self::IdleConnections,
            Self::Oversized,
            Self::Malformed,
            Self::HalfOpenTcp,
            Self::PartialPreface,
            Self::SlowReaders,
            Self::QuicInitials,
        ]);
        attacks
    }

    /// Runs the attack against `addresses`: `ready` is sent once it is in place; it stops when
    /// `stop` is cancelled.
    pub async fn run(
        self,
        addresses: Addresses,
        ready: oneshot::Sender<()>,
        stop: CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let tcp = |port: Port| {
            port.number(&addresses)
                .map(|number| addresses.at(number))
                .into_iter()
        };
        match self {
            Self::Slowloris(port) => hold::slowloris(tcp(port).collect(), ready, stop).await,
            Self::IdleConnections => idle::run(&addresses, ready, stop).await,
            Self::Oversized => bad_requests::oversized(&addresses, ready, stop).await,
            Self::Malformed => bad_requests::malformed(&addresses, ready, stop).await,
            Self::HalfOpenTcp => {
                let ports = [Port::Http, Port::Passthrough, Port::Admin, Port::Carrier];
                hold::still(ports.into_iter().flat_map(tcp).collect(), b"", ready, stop).await
            }
            Self::PartialPreface => {
                hold::still(tcp(Port::Http).collect(), PARTIAL_PREFACE, ready, stop).await
            }
            Self::QuicInitials => quic::run(addresses.at(addresses.tunnel), ready, stop).await,
            Self::SlowReaders => slow_reader::run(&addresses, ready, stop).await,
        }
    }
}
