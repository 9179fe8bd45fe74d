//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a forwarder drops them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers a `Connection:` token never removes (as NGINX ignores such tokens for them): the
/// request's target and credentials, and the forwarding headers proxies set.
const NEVER_HOP_BY_HOP: [&str; 7] = [
    "host",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Removes hop-by-hop headers. For an upgrade, `Upgrade` and `Connection: upgrade` stay, since
/// the next hop must see them to switch protocols too. `TE: trailers` stays (gRPC needs it).
///
/// Headers named by `Connection:` are removed too, except Host, Authorization and the
/// forwarding headers, and any name `keep` says the caller needs (such as the intercept
/// header): a client cannot make a forwarder drop them.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, keep: impl Fn(&[u8]) -> bool) {
    // Most messages carry none: one pass over the names then spares a hashed lookup per name.
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(first) = headers.get(header::CONNECTION).cloned() {
        // Values share the request's buffer, so these clones copy no bytes; a second
        // `Connection:` line is rare, and an empty `Vec` allocates nothing.
        let more: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .skip(1)
            .cloned()
            .collect();
        headers.remove(header::CONNECTION);
        for token in std::iter::once(&first)
            .chain(&more)
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        {
            let token = token.trim_ascii();
            let kept = token.eq_ignore_ascii_case(b"upgrade")
                || NEVER_HOP_BY_HOP
                    .iter()
                    .any(|name| token.eq_ignore_ascii_case(name.as_bytes()))
                || keep(token);
            // Looked up by `&str` (in any case), which makes no `HeaderName`; an invalid name
            // matches nothing.
            if let (false, Ok(token)) = (kept, std::str::from_utf8(token)) {
                headers.remove(token);
            }
        }
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

/// Whether `name` is one of the hop-by-hop headers removed whatever `Connection:` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TRANSFER_ENCODING,
        &header::TE,
        &header::UPGRADE,
    ]
    .contains(&name)
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
        strip_hop_by_hop(&mut headers, false, |_| false);
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
        strip_hop_by_hop(&mut headers, true, |_| false);
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

    #[test]
    fn connection_tokens_never_remove_end_to_end_headers() {
        let mut headers = map(&[
            (
                "connection",
                "Host, AUTHORIZATION, x-forwarded-for, X-Forwarded-Proto, x-forwarded-host",
            ),
            ("connection", "x-real-ip, forwarded, x-c6o-intercept, X-Gone"),
            ("connection", "not a name, X-LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"),
            ("host", "svc.demo"),
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "svc.example"),
            ("x-real-ip", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1"),
            ("x-c6o-intercept", "yes"),
            ("x-gone", "1"),
            ("x-llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll", "1"),
        ]);
        let mut expected = headers.clone();
        expected.remove("connection");
        expected.remove("x-gone");
        expected.remove(
            "x-llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll",
        );
        strip_hop_by_hop(&mut headers, false, |name| {
            name.eq_ignore_ascii_case(b"x-c6o-intercept")
        });
        assert_eq!(headers, expected);
    }
}
