//! The `HttpPeer` for a target: resolve its host, apply the egress policy to the resolved
//! address (SPEC §9), and set TLS/SNI and the configured timeouts.

use std::net::{IpAddr, SocketAddr};

use pingora::upstreams::peer::HttpPeer;
use url::{Host, Url};

use crate::api_error::ApiError;
use crate::config::UpstreamConfig;
use crate::egress::EgressPolicy;
use crate::proxy::resolve::Resolver;

/// Resolve and check; the first address the policy allows wins.
pub async fn peer(
    base_url: &Url,
    egress: EgressPolicy,
    resolver: &Resolver,
    config: &UpstreamConfig,
) -> Result<Box<HttpPeer>, ApiError> {
    let tls = base_url.scheme() == "https";
    let port = base_url
        .port_or_known_default()
        .ok_or(ApiError::UpstreamUnreachable)?;
    // For an address the "SNI" is the address itself: Pingora checks the certificate against
    // it (an IP SAN) and rustls sends no SNI for an address. Left empty, every handshake with
    // an `https://<ip>` target failed before it began.
    let (address, sni) = match base_url.host() {
        Some(Host::Ipv4(ip)) => (allowed(egress, &[IpAddr::V4(ip)])?, address_sni(tls, ip)),
        Some(Host::Ipv6(ip)) => (allowed(egress, &[IpAddr::V6(ip)])?, address_sni(tls, ip)),
        Some(Host::Domain(name)) => {
            let resolved = resolver
                .lookup(name, port)
                .await
                .map_err(|_| ApiError::UpstreamUnreachable)?;
            (allowed(egress, &resolved)?, name.to_owned())
        }
        None => return Err(ApiError::UpstreamUnreachable),
    };
    let mut peer = HttpPeer::new(SocketAddr::new(address, port), tls, sni);
    peer.options.connection_timeout = Some(config.connect_timeout);
    peer.options.total_connection_timeout = Some(config.connect_timeout);
    peer.options.read_timeout = Some(config.read_timeout);
    peer.options.write_timeout = Some(config.read_timeout);
    peer.options.idle_timeout = Some(config.idle_timeout);
    Ok(Box::new(peer))
}

/// The name to verify an address's certificate against; plain HTTP has none (and does not pay
/// for formatting one on every request).
fn address_sni(tls: bool, ip: impl Into<IpAddr>) -> String {
    if tls {
        ip.into().to_string()
    } else {
        String::new()
    }
}

/// The first address the egress policy allows.
fn allowed(egress: EgressPolicy, addresses: &[IpAddr]) -> Result<IpAddr, ApiError> {
    if addresses.is_empty() {
        return Err(ApiError::UpstreamUnreachable);
    }
    addresses
        .iter()
        .copied()
        .find(|ip| egress.check_ip(*ip).is_ok())
        .ok_or(ApiError::EgressDenied)
}
