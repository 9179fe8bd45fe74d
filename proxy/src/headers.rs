//! Header rewriting on the way through: hop-by-hop headers are dropped (the rule lives in the
//! forwarding core, `cz_forward`), and the
//! `X-Forwarded-*` / `Forwarded` headers NGINX users configure are added.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use cz_forward::{is_upgrade, strip_hop_by_hop};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The downstream client of one connection, with its forwarding header values made once per
/// connection rather than once per request.
#[derive(Clone)]
pub struct ClientAddr {
    ip: HeaderValue,
    forwarded: HeaderValue,
}

impl ClientAddr {
    /// Prepares the header values for a client at `peer`.
    pub fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip().to_canonical();
        let forwarded = match ip {
            IpAddr::V4(ip) => format!("for={ip};proto=http"),
            IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=http"),
        };
        Self {
            ip: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            forwarded: HeaderValue::from_str(&forwarded).expect("ASCII is a valid header value"),
        }
    }
}

/// Prepares a request for the next hop (the original pods or the laptop): drops hop-by-hop
/// headers and adds forwarding headers. Returns whether the request asks for an upgrade.
pub fn prepare_request<B>(request: &mut http::Request<B>, client: &ClientAddr) -> bool {
    let upgrade = is_upgrade(request.headers());
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        let authority = request.uri().authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    add_forwarded(headers, client, host);
    upgrade
}

/// Adds what an NGINX proxy is usually configured to add: `X-Forwarded-For` (appended to any the
/// request carries, as `$proxy_add_x_forwarded_for`), `X-Real-IP`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (unless an earlier proxy set them), and an RFC 7239 `Forwarded` element.
pub fn add_forwarded(headers: &mut HeaderMap, client: &ClientAddr, host: Option<HeaderValue>) {
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
    headers.insert(X_REAL_IP.clone(), client.ip.clone());
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

    #[test]
    fn forwarded_headers_are_added_as_nginx_would() {
        let client = ClientAddr::new("10.1.2.3:5555".parse().expect("addr"));
        let mut headers = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        add_forwarded(
            &mut headers,
            &client,
            Some(HeaderValue::from_static("svc.demo")),
        );
        assert_eq!(headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(headers["x-real-ip"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "svc.demo");
        assert_eq!(headers["forwarded"], "for=10.1.2.3;proto=http");

        let v6 = ClientAddr::new("[::1]:80".parse().expect("addr"));
        let mut headers = map(&[("x-forwarded-proto", "https")]);
        add_forwarded(&mut headers, &v6, None);
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["forwarded"], "for=\"[::1]\";proto=http");
    }
}
