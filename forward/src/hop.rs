//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a forwarder drops them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers. For an upgrade, `Upgrade` and `Connection: upgrade` stay, since
/// the next hop must see them to switch protocols too. `TE: trailers` stays (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for token in listed
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        {
            let token = token.trim_ascii();
            if !token.eq_ignore_ascii_case(b"upgrade") {
                if let Ok(name) = HeaderName::from_bytes(token) {
                    headers.remove(name);
                }
            }
        }
        headers.remove(header::CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    if headers
        .get(header::TE)
        .is_some_and(|te| !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cz_shared::headers::is_upgrade;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "stays"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers, map(&[("x-end-to-end", "stays")]));
    }

    #[test]
    fn upgrade_and_te_trailers_survive() {
        let mut headers = map(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert!(is_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(
            headers,
            map(&[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("te", "trailers")
            ])
        );
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }
}
