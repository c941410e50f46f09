//! The webhook client's DNS resolver: resolves with the system resolver and keeps only the
//! addresses the egress policy allows, so the connection goes to an address that was checked
//! (no window for a second, different answer between check and connect).

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::egress::EgressPolicy;

pub struct EgressResolver {
    pub egress: EgressPolicy,
}

#[derive(Debug, thiserror::Error)]
#[error("address refused by egress policy")]
struct Refused;

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is replaced by the client with the URL's own.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| egress.check_ip(addr.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    #[tokio::test]
    async fn loopback_answers_are_dropped_unless_private_addresses_are_allowed() {
        let name = || Name::from_str("localhost").unwrap();
        let strict = EgressResolver {
            egress: EgressPolicy::new(false),
        };
        let refused = strict.resolve(name()).await.err().unwrap();
        assert_eq!(refused.to_string(), "address refused by egress policy");
        let open = EgressResolver {
            egress: EgressPolicy::new(true),
        };
        let addrs: Vec<SocketAddr> = open.resolve(name()).await.unwrap().collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
