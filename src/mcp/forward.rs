//! The seam between the MCP tools and the gateway pipeline. `api_request` describes one HTTP
//! request; the proxy runs it through the same `ProxyHttp` code as `/gateway` (SPEC §4 steps
//! 1–9) and hands back what the agent would have received. Plain `http` types only: this
//! module knows nothing of Pingora.

use std::net::IpAddr;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// One request for the gateway pipeline, as an agent would have sent it to `/gateway`.
pub struct ForwardRequest {
    /// The agent's own `Authorization` value, from its MCP request: steps 1–2 run again on it.
    pub authorization: HeaderValue,
    /// The agent's address, for the IP allowlist (never a loopback hop).
    pub client_ip: IpAddr,
    pub method: Method,
    /// `/gateway/{slug}/{path}?{query}`, already percent-encoded.
    pub target: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Never shows the agent's token (or header values, which may carry secrets too).
impl std::fmt::Debug for ForwardRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardRequest")
            .field("client_ip", &self.client_ip)
            .field("method", &self.method)
            .field("headers", &self.headers.len())
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What came back, with the body cut at the caller's limit.
#[derive(Debug)]
pub struct ForwardResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// At most the requested limit of bytes.
    pub body: Bytes,
    /// The full length of the body (from `Content-Length` when the rest was not read).
    pub size: u64,
    /// The gateway answered this itself (a refusal, or 502/504): not the upstream.
    pub refused: bool,
}

/// The pipeline could not be driven at all (an internal fault, not an upstream answer).
#[derive(Debug, thiserror::Error)]
#[error("gateway pipeline failed: {0}")]
pub struct ForwardError(pub String);

#[async_trait]
pub trait Forwarder: Send + Sync {
    /// Run `request` through the gateway pipeline; read at most `limit` bytes of the body.
    async fn forward(
        &self,
        request: ForwardRequest,
        limit: u64,
    ) -> Result<ForwardResponse, ForwardError>;
}
