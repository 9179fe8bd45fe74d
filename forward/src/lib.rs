//! The HTTP forwarding core that cz-proxy (to the original pods) and czctl (to the developer's
//! local app) share: dialing one fixed address with bounded socket buffers ([`Dialer`]), connections
//! kept per protocol to it ([`Forwarder`], whose responses carry a [`ResponseBody`]), the request
//! URI and authority rules, hop-by-hop header rules ([`strip_hop_by_hop`]), splicing an
//! upgraded connection ([`splice`]), and the error response both ends answer with
//! ([`error_response`], naming the failure in [`ERROR_HEADER`]).
//!
//! It opens sockets, so it is not part of `cz-shared` (which stays pure); it depends on neither
//! side, and both depend on it.

#![warn(missing_docs)]

mod dial;
mod error;
mod forwarder;
mod hop;
mod http1;
mod http2;
mod splice;

pub use cz_shared::headers::{is_upgrade, ERROR_HEADER};
pub use dial::{bound_socket_buffers, Dialer, DEFAULT_SOCKET_BUFFER};
pub use error::{error_response, ForwardError};
pub use forwarder::Forwarder;
pub use hop::strip_hop_by_hop;
pub use http1::ResponseBody;
pub use splice::splice;
