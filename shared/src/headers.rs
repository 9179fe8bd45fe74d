//! HTTP header facts both tunnel ends rely on.

use http::header::{self, HeaderMap, HeaderName, InvalidHeaderName};

/// Response header naming why cz-proxy or czctl answered a request itself (e.g.
/// `tunnel-disconnected`, `local-app-unreachable`), so a client can tell it from the app's answer.
pub const ERROR_HEADER: &str = "x-cz-proxy-error";

/// `X-Forwarded-For`, set by cz-proxy on every request it forwards.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`, set by cz-proxy on every request it forwards.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`, set by cz-proxy on every request it forwards that names a host.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`, set by cz-proxy on every request it forwards.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The names outside the `http` crate's standard set that arrive on nearly every tunnelled
/// request: [`header_name`] makes them without parsing or allocating.
static FREQUENT_CUSTOM_NAMES: [&HeaderName; 4] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_REAL_IP,
];

/// The header name spelled `bytes`, as [`HeaderName::from_bytes`] makes it, but without an
/// allocation for the forwarding headers cz-proxy sets (a custom name is otherwise copied into
/// a buffer of its own).
pub fn header_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    match FREQUENT_CUSTOM_NAMES
        .iter()
        .find(|name| name.as_str().as_bytes() == bytes)
    {
        Some(name) => Ok(HeaderName::clone(name)),
        None => HeaderName::from_bytes(bytes),
    }
}

/// Whether an HTTP/1.1 message asks to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_made_as_the_http_crate_makes_them() {
        for name in [
            "x-forwarded-for",
            "X-Forwarded-For",
            "x-real-ip",
            "x-forwarded-proto",
            "x-forwarded-host",
            "host",
            "x-intercept",
            "x-forwarded-fo",
        ] {
            assert_eq!(
                header_name(name.as_bytes()).ok(),
                HeaderName::from_bytes(name.as_bytes()).ok(),
                "{name}"
            );
        }
        assert!(header_name(b"bad name").is_err());
        assert!(header_name(b"").is_err());
    }
}
