//! What `cz-proxy` (in the cluster) and `czctl` (on the laptop) share: the tunnel's wire protocol,
//! the intercept rule, the session certificates, and the [`contract`] of the proxy czctl deploys
//! (flags, ports, paths, admin state) and its [`control`] channel.
//!
//! The wire is QUIC: [`protocol`] defines the handshake and frames, [`stream`] moves them over
//! quinn streams that callers open, [`tls`] makes the per-session certificates and the mutual-TLS
//! configuration of both ends, [`carrier`] carries the QUIC connection over a byte stream (a
//! port-forward) and [`udp`] sets up its endpoints over UDP. Nothing here opens a socket.

#![warn(missing_docs)]

pub mod carrier;
pub mod contract;
pub mod control;
pub mod headers;
pub mod hello;
pub mod protocol;
pub mod rule;
pub mod signal;
pub mod stream;
pub mod tls;
pub mod udp;

#[cfg(test)]
mod loopback;

pub use rule::{InterceptRule, RuleError, DEFAULT_RULE};
