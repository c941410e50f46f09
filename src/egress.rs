//! `EgressPolicy`: which upstream URLs and addresses Gatehouse may contact (SPEC §9).
//!
//! Checked when a base URL (or an OAuth token URL) is stored, and again by the proxy on the
//! resolved address right before it connects, so a hostname that resolves to an internal
//! address is caught too. `allow_private = true` (tests, on-prem APIs) turns both checks off and
//! allows plain `http`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("must use https")]
    SchemeNotAllowed,
    #[error("must not contain a user name or password")]
    HasUserinfo,
    #[error("must not contain a fragment")]
    HasFragment,
    #[error("must have a host")]
    NoHost,
    #[error("must not point at a private, loopback, link-local or metadata address")]
    InternalAddress,
}

/// IPv4 ranges no upstream may be in.
static BLOCKED_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this" network
        "10.0.0.0/8",      // private
        "100.64.0.0/10",   // carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, broadcast
    ]
    .iter()
    .filter_map(|cidr| cidr.parse().ok())
    .collect()
});

/// IPv6 ranges no upstream may be in. Ranges that embed an IPv4 address (mapped, NAT64, 6to4)
/// are handled separately: the embedded address is checked.
static BLOCKED_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    [
        "::/128",         // unspecified
        "::1/128",        // loopback
        "64:ff9b:1::/48", // local-use NAT64
        "100::/64",       // discard
        "2001::/32",      // Teredo
        "2001:db8::/32",  // documentation
        "fc00::/7",       // unique local (also AWS metadata fd00:ec2::254)
        "fe80::/10",      // link-local
        "fec0::/10",      // site-local (deprecated)
        "ff00::/8",       // multicast
    ]
    .iter()
    .filter_map(|cidr| cidr.parse().ok())
    .collect()
});

/// Hostnames that name the local machine or a cloud metadata service.
fn is_internal_hostname(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "metadata"
        || host == "metadata.google.internal"
        || host == "instance-data"
        || host.ends_with(".internal")
        || host.ends_with(".local")
}

/// The IPv4 address carried inside an IPv6 one: IPv4-mapped, IPv4-compatible, NAT64
/// (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = v6.segments();
    let octets = v6.octets();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) ::a.b.c.d; :: and ::1 are caught by the v6 list.
        return Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(
            octets[12], octets[13], octets[14], octets[15],
        ));
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// True when `ip` is in a range no upstream may be in.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => BLOCKED_V4.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_internal_ip(IpAddr::V4(v4)) || v6.is_loopback() || v6.is_unspecified();
            }
            BLOCKED_V6.iter().any(|net| net.contains(&v6))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow_private: bool,
}

impl EgressPolicy {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    /// May this URL be stored as an upstream (base URL or token URL)?
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            _ => return Err(EgressError::SchemeNotAllowed),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::HasUserinfo);
        }
        if url.fragment().is_some() {
            return Err(EgressError::HasFragment);
        }
        let host = url.host().ok_or(EgressError::NoHost)?;
        if self.allow_private {
            return Ok(());
        }
        let internal = match host {
            Host::Ipv4(v4) => is_internal_ip(IpAddr::V4(v4)),
            Host::Ipv6(v6) => is_internal_ip(IpAddr::V6(v6)),
            Host::Domain(name) => is_internal_hostname(name),
        };
        if internal {
            Err(EgressError::InternalAddress)
        } else {
            Ok(())
        }
    }

    /// May the proxy connect to this resolved address?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        if !self.allow_private && is_internal_ip(ip) {
            return Err(EgressError::InternalAddress);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expected: Result<(), EgressError>) {
        let parsed = Url::parse(url).unwrap();
        assert_eq!(
            EgressPolicy::new(false).check_url(&parsed),
            expected,
            "{url}"
        );
    }

    #[test]
    fn public_https_urls_pass() {
        for url in [
            "https://api.github.com",
            "https://api.github.com/v3?x=1",
            "https://8.8.8.8/",
            "https://[2606:4700:4700::1111]/",
            "https://graph.microsoft.com/v1.0",
            "https://[64:ff9b::808:808]/", // NAT64 of a public address
            "https://[2002:808:808::]/",   // 6to4 of a public address
        ] {
            check(url, Ok(()));
        }
    }

    #[test]
    fn url_shape_rules() {
        check("http://api.github.com", Err(EgressError::SchemeNotAllowed));
        check("ftp://api.github.com", Err(EgressError::SchemeNotAllowed));
        check(
            "https://user:pw@api.github.com",
            Err(EgressError::HasUserinfo),
        );
        check("https://user@api.github.com", Err(EgressError::HasUserinfo));
        check(
            "https://api.github.com/#frag",
            Err(EgressError::HasFragment),
        );
    }

    #[test]
    fn internal_addresses_and_names_are_refused() {
        for url in [
            "https://127.0.0.1",
            "https://127.1.2.3:8443",
            "https://10.0.0.1",
            "https://172.16.5.4",
            "https://192.168.1.1",
            "https://169.254.169.254/latest/meta-data",
            "https://100.100.100.200",
            "https://0.0.0.0",
            "https://224.0.0.1",
            "https://255.255.255.255",
            "https://[::1]",
            "https://[::]",
            "https://[fe80::1]",
            "https://[fd00:ec2::254]",
            "https://[::ffff:127.0.0.1]",
            "https://[::ffff:10.0.0.1]",
            "https://[::127.0.0.1]",
            "https://[64:ff9b::7f00:1]",
            "https://[64:ff9b::a00:1]",
            "https://[64:ff9b:1::1]",
            "https://[2002:7f00:1::]",
            "https://[2002:a00:1::]",
            "https://localhost",
            "https://api.localhost",
            "https://LOCALHOST.",
            "https://metadata.google.internal",
            "https://printer.local",
            // Decimal and hex IPv4 forms are normalised by the URL parser.
            "https://2130706433",
            "https://0x7f.0.0.1",
        ] {
            check(url, Err(EgressError::InternalAddress));
        }
    }

    #[test]
    fn allow_private_permits_http_and_loopback_but_not_bad_shapes() {
        let policy = EgressPolicy::new(true);
        assert_eq!(
            policy.check_url(&Url::parse("http://127.0.0.1:9000").unwrap()),
            Ok(())
        );
        assert_eq!(policy.check_ip("10.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.check_url(&Url::parse("http://u:p@127.0.0.1").unwrap()),
            Err(EgressError::HasUserinfo)
        );
        assert_eq!(
            policy.check_url(&Url::parse("file:///etc/passwd").unwrap()),
            Err(EgressError::SchemeNotAllowed)
        );
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let policy = EgressPolicy::new(false);
        assert_eq!(
            policy.check_ip("127.0.0.1".parse().unwrap()),
            Err(EgressError::InternalAddress)
        );
        assert_eq!(
            policy.check_ip("::ffff:169.254.169.254".parse().unwrap()),
            Err(EgressError::InternalAddress)
        );
        assert_eq!(policy.check_ip("93.184.216.34".parse().unwrap()), Ok(()));
    }
}
