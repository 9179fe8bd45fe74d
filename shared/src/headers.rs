//! HTTP header facts both tunnel ends rely on.

use http::header::{self, HeaderMap};

/// Response header naming why cz-proxy or czctl answered a request itself (e.g.
/// `tunnel-disconnected`, `local-app-unreachable`), so a client can tell it from the app's answer.
pub const ERROR_HEADER: &str = "x-cz-proxy-error";

/// Whether an HTTP/1.1 message asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}
