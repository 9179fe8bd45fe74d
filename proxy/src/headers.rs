//! Header rewriting on the way through: hop-by-hop headers are dropped (the rule lives in the
//! forwarding core, `cz_forward`), and the `X-Forwarded-*`, `X-Real-IP` and `Forwarded` headers
//! NGINX users configure are set from what the proxy saw.
//!
//! A client's own forwarding headers are replaced, so nobody can make an app believe a request
//! came from another address, host or scheme (apps build links from them); only a peer in
//! `--trusted-proxies` (a load balancer or ingress in front of the Service) has its headers
//! kept and appended to, as NGINX's `real_ip` does.

use std::net::{IpAddr, SocketAddr};

use cz_shared::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP};
use http::header::{self, HeaderMap, HeaderValue};

pub use cz_forward::{is_upgrade, strip_hop_by_hop};

use crate::trusted::TrustedProxy;

/// The downstream client of one connection, with its forwarding header values made once per
/// connection rather than once per request.
#[derive(Clone)]
pub struct ClientAddr {
    ip: HeaderValue,
    forwarded: HeaderValue,
    trusted: bool,
}

impl ClientAddr {
    /// Prepares the header values for a client at `peer`, trusted if it is in one of
    /// `trusted_proxies`.
    pub fn new(peer: SocketAddr, trusted_proxies: &[TrustedProxy]) -> Self {
        let ip = peer.ip().to_canonical();
        let forwarded = match ip {
            IpAddr::V4(ip) => format!("for={ip};proto=http"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=http"),
        };
        Self {
            ip: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            forwarded: HeaderValue::from_str(&forwarded).expect("ASCII is a valid header value"),
            trusted: trusted_proxies.iter().any(|network| network.contains(ip)),
        }
    }
}

/// Prepares a request for the next hop (the original pods or the laptop): drops hop-by-hop
/// headers (but never those `keep` names, nor Host, Authorization and the forwarding headers)
/// and sets the forwarding headers. Returns whether the request asks for an upgrade.
pub fn prepare_request<B>(
    request: &mut http::Request<B>,
    client: &ClientAddr,
    keep: impl Fn(&[u8]) -> bool,
) -> bool {
    let upgrade = is_upgrade(request.headers());
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        let authority = request.uri().authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade, keep);
    set_forwarded(headers, client, host);
    upgrade
}

/// Sets what an NGINX proxy is usually configured to set: `X-Forwarded-For`, `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and an RFC 7239 `Forwarded` element, from the peer
/// and `host` — replacing whatever the client sent. For a trusted peer, its `X-Forwarded-For`
/// and `Forwarded` are appended to and its `X-Real-IP`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` kept (set only when missing).
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientAddr, host: Option<HeaderValue>) {
    if !client.trusted {
        headers.insert(X_FORWARDED_FOR.clone(), client.ip.clone());
        headers.insert(X_REAL_IP.clone(), client.ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
            None => headers.remove(&X_FORWARDED_HOST),
        };
        headers.insert(header::FORWARDED, client.forwarded.clone());
        return;
    }
    let forwarded_for = match headers.get_all(&X_FORWARDED_FOR).iter().next() {
        None => client.ip.clone(),
        Some(_) => {
            let mut joined = Vec::new();
            for value in headers.get_all(&X_FORWARDED_FOR) {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(client.ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers
        .entry(X_REAL_IP.clone())
        .or_insert_with(|| client.ip.clone());
    headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert_with(|| HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.entry(X_FORWARDED_HOST.clone()).or_insert(host);
    }
    headers.append(header::FORWARDED, client.forwarded.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                )
            })
            .collect()
    }

    /// What a client claims about where a request comes from.
    const SPOOFED: [(&str, &str); 7] = [
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
        ("x-real-ip", "1.1.1.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=1.1.1.1;host=evil.example;proto=https"),
        ("x-end-to-end", "stays"),
    ];

    fn trusted() -> Vec<TrustedProxy> {
        vec!["10.0.0.0/8".parse().expect("CIDR")]
    }

    #[test]
    fn an_untrusted_client_s_forwarding_headers_are_replaced() {
        let client = ClientAddr::new("192.168.1.2:5555".parse().expect("addr"), &trusted());
        let mut headers = map(&SPOOFED);
        set_forwarded(
            &mut headers,
            &client,
            Some(HeaderValue::from_static("svc.demo")),
        );
        assert_eq!(
            headers,
            map(&[
                ("x-forwarded-for", "192.168.1.2"),
                ("x-real-ip", "192.168.1.2"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "svc.demo"),
                ("forwarded", "for=192.168.1.2;proto=http"),
                ("x-end-to-end", "stays"),
            ])
        );

        let v6 = ClientAddr::new("[::1]:80".parse().expect("addr"), &[]);
        let mut headers = map(&SPOOFED);
        set_forwarded(&mut headers, &v6, None);
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(!headers.contains_key("x-forwarded-host"));
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn a_trusted_proxy_s_forwarding_headers_are_appended_to_as_nginx_would() {
        let proxy = ClientAddr::new("10.1.2.3:5555".parse().expect("addr"), &trusted());
        let mut headers = map(&SPOOFED);
        set_forwarded(
            &mut headers,
            &proxy,
            Some(HeaderValue::from_static("svc.demo")),
        );
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(headers["x-real-ip"], "1.1.1.1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "evil.example");
        let forwarded: Vec<_> = headers.get_all("forwarded").iter().collect();
        assert_eq!(
            forwarded,
            [
                "for=1.1.1.1;host=evil.example;proto=https",
                "for=10.1.2.3;proto=http"
            ]
        );

        let mut headers = HeaderMap::new();
        set_forwarded(
            &mut headers,
            &proxy,
            Some(HeaderValue::from_static("svc.demo")),
        );
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-real-ip"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "svc.demo");
    }
}
