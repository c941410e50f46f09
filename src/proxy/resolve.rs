//! Upstream host names to addresses, cached for `upstream.dns_cache_ttl`.
//!
//! Resolving per request costs a trip to the blocking pool and a `getaddrinfo` each time (about
//! 70 µs of CPU per request even for `localhost` from /etc/hosts, and a DNS round trip for a real
//! API host without a local caching resolver). `getaddrinfo` reports no record TTL, so entries
//! live for a fixed time, like nginx's `resolver … valid=`. Failed lookups are not cached. The
//! egress policy is applied to the cached addresses on every request, as before. Entries are
//! keyed by host alone (the addresses do not depend on the port), so a hit allocates nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Entries beyond this many trigger a sweep of the expired ones (hosts come from targets, so
/// the map stays small; the sweep only bounds what deleted targets leave behind).
const SWEEP_ABOVE: usize = 1024;

pub struct Resolver {
    ttl: Duration,
    cache: DashMap<String, Cached>,
}

#[derive(Clone)]
struct Cached {
    addresses: Arc<[IpAddr]>,
    expires: Instant,
}

impl Resolver {
    /// `ttl` zero resolves on every request.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: DashMap::new(),
        }
    }

    /// The addresses of `host`, from the cache while fresh.
    pub async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Arc<[IpAddr]>> {
        let now = Instant::now();
        if let Some(cached) = self.cache.get(host)
            && cached.expires > now
        {
            return Ok(cached.addresses.clone());
        }
        let addresses: Arc<[IpAddr]> = tokio::net::lookup_host((host, port))
            .await?
            .map(|address| address.ip())
            .collect();
        if !self.ttl.is_zero() && !addresses.is_empty() {
            if self.cache.len() >= SWEEP_ABOVE {
                self.cache.retain(|_, cached| cached.expires > now);
            }
            let cached = Cached {
                addresses: addresses.clone(),
                expires: now + self.ttl,
            };
            self.cache.insert(host.to_owned(), cached);
        }
        Ok(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_entry_is_served_from_the_cache_and_an_expired_one_is_resolved_again() {
        let resolver = Resolver::new(Duration::from_secs(60));
        let first = resolver.lookup("localhost", 80).await.expect("resolve");
        assert!(!first.is_empty());
        let second = resolver.lookup("localhost", 80).await.expect("resolve");
        assert!(
            Arc::ptr_eq(&first, &second),
            "second lookup came from the cache"
        );

        // Age the entry past its TTL: the next lookup resolves again (a new allocation).
        resolver
            .cache
            .get_mut("localhost")
            .expect("cached after the first lookup")
            .expires = Instant::now() - Duration::from_secs(1);
        let third = resolver.lookup("localhost", 80).await.expect("resolve");
        assert!(
            !Arc::ptr_eq(&first, &third),
            "expired entry was resolved again"
        );
        assert_eq!(first, third);
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let resolver = Resolver::new(Duration::ZERO);
        resolver.lookup("localhost", 80).await.expect("resolve");
        assert!(resolver.cache.is_empty());
    }

    #[tokio::test]
    async fn a_failed_lookup_is_an_error_and_is_not_cached() {
        let resolver = Resolver::new(Duration::from_secs(60));
        // `.invalid` never resolves (RFC 6761).
        assert!(resolver.lookup("gatehouse-test.invalid", 80).await.is_err());
        assert!(resolver.cache.is_empty());
    }
}
