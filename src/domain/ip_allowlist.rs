//! `IpAllowlist`: the CIDRs a token may be used from; empty means any address.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CIDR or IP address: {0}")]
pub struct InvalidCidr(pub String);

impl IpAllowlist {
    /// Parse CIDRs; a bare address means that one address (`/32` or `/128`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, InvalidCidr> {
        entries
            .iter()
            .map(|entry| {
                let text = entry.as_ref().trim();
                text.parse::<IpNet>()
                    .map(|net| net.trunc())
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| InvalidCidr(text.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }

    /// IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) match IPv4 entries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(entries: &[&str], ip: &str, expected: bool) {
        let list = IpAllowlist::parse(entries).unwrap();
        assert_eq!(
            list.allows(ip.parse().unwrap()),
            expected,
            "{entries:?} vs {ip}"
        );
    }

    #[test]
    fn membership() {
        check(&[], "203.0.113.9", true);
        check(&["10.0.0.0/8"], "10.1.2.3", true);
        check(&["10.0.0.0/8"], "11.0.0.1", false);
        check(&["127.0.0.1"], "127.0.0.1", true);
        check(&["127.0.0.1"], "::ffff:127.0.0.1", true);
        check(&["2001:db8::/32"], "2001:db8::1", true);
        check(&["2001:db8::/32", "192.0.2.0/24"], "192.0.2.200", true);
        check(&["192.0.2.0/24"], "::1", false);
    }

    #[test]
    fn parse_normalises_and_rejects_garbage() {
        let list = IpAllowlist::parse(&["10.1.2.3/8", " 192.0.2.1 "]).unwrap();
        assert_eq!(list.to_strings(), vec!["10.0.0.0/8", "192.0.2.1/32"]);
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.1/8/8"] {
            assert_eq!(
                IpAllowlist::parse(&[bad]),
                Err(InvalidCidr(bad.trim().to_owned()))
            );
        }
    }
}
