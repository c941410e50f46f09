//! The agent-facing listener, on Pingora's `ProxyHttp`. The only module that imports `pingora`.
//!
//! Phase chart (what each `ProxyHttp` phase does here):
//! - `new_ctx`: counts the request as in flight (for the shutdown drain).
//! - `request_filter`: routes `/health`; everything else is answered here until the gateway
//!   data plane lands (issue "Gateway data plane"), so `upstream_peer` is never reached.

mod respond;
mod service;

pub use service::{ProxyHandle, start};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora::prelude::*;

/// Shared state of the proxy listener.
pub struct GatewayProxy {
    in_flight: Arc<AtomicUsize>,
}

/// What one request has learned so far. Dropping it ends the request's in-flight count.
pub struct RequestCtx {
    _in_flight: InFlightGuard,
}

struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestCtx {
            _in_flight: InFlightGuard(self.in_flight.clone()),
        }
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        let path = session.req_header().uri.path();
        if path == "/health" {
            respond::json(session, 200, &serde_json::json!({"status": "ok"})).await?;
        } else {
            respond::json(session, 404, &serde_json::json!({"error": "not found"})).await?;
        }
        // true: the response is written, nothing goes upstream.
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream is routed yet",
        ))
    }

    /// Pingora's default summary includes the request line with its query string.
    fn request_summary(&self, session: &Session, _ctx: &Self::CTX) -> String {
        let header = session.req_header();
        format!("{} {}", header.method, header.uri.path())
    }
}
