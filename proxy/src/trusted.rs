//! The trusted-proxy list (`--trusted-proxies`): peers whose forwarding headers are kept and
//! appended to, as NGINX's `set_real_ip_from` does; every other peer's are replaced.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One network of trusted proxies, `ADDRESS/PREFIX` (or one address), IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix: u8,
}

/// A `--trusted-proxies` entry that is not a CIDR block or an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block (ADDRESS/PREFIX), e.g. 10.0.0.0/8 or fd00::/8")]
pub struct BadTrustedProxy(pub String);

impl TrustedProxy {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address counts as its IPv4 address.
    /// Allocation-free: it runs once per accepted connection.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => prefix_matches(
                u128::from(network.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                prefix_matches(network.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` agree.
fn prefix_matches(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let ignored = u32::from(width - prefix);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl FromStr for TrustedProxy {
    type Err = BadTrustedProxy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadTrustedProxy(text.to_owned());
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(text: &str) -> TrustedProxy {
        text.parse().expect("a valid entry")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let v4 = proxy("10.1.0.0/16");
        assert!(v4.contains(ip("10.1.255.3")));
        assert!(v4.contains(ip("::ffff:10.1.0.1")));
        assert!(!v4.contains(ip("10.2.0.1")));
        assert!(!v4.contains(ip("::1")));
        let one = proxy("192.168.1.7");
        assert!(one.contains(ip("192.168.1.7")));
        assert!(!one.contains(ip("192.168.1.8")));
        let everything = proxy("0.0.0.0/0");
        assert!(everything.contains(ip("203.0.113.9")));
        assert!(!everything.contains(ip("2001:db8::1")));
        let v6 = proxy("fd00::/8");
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(proxy("::/0").contains(ip("2001:db8::1")));
        assert!(proxy("::1/128").contains(ip("::1")));
    }

    #[test]
    fn bad_entries_say_the_expected_form() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/",
            "",
        ] {
            let error = bad.parse::<TrustedProxy>().expect_err(bad);
            assert!(error.to_string().contains("CIDR"), "{error}");
        }
        assert_eq!(proxy(" 10.0.0.0/8 ").to_string(), "10.0.0.0/8");
    }
}
