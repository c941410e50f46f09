//! `RequestCtx`: what one request has learned so far, from `new_ctx` to `logging`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::access::{Grant, TokenEntry};
use crate::api_error::ApiError;
use crate::domain::guard::GuardOutcome;

pub struct RequestCtx {
    pub started: Instant,
    /// The agent's address, read once from the connection.
    pub client_ip: IpAddr,
    /// Set once steps 1–2 passed: such a request is audited (SPEC §4 step 9).
    pub caller: Option<Arc<TokenEntry>>,
    /// Slug as requested (for the audit row), once routed to `/gateway/{slug}`.
    pub slug: Option<String>,
    /// Set once steps 1–4 passed.
    pub grant: Option<Grant>,
    /// Path and query to send upstream (step 7).
    pub upstream_target: String,
    /// The request path without its query, for the audit row.
    pub audit_path: String,
    pub upstream_started: Option<Instant>,
    pub upstream_elapsed: Option<Duration>,
    /// A connected account's access token to inject (managed targets).
    pub bearer: Option<Arc<str>>,
    /// The error this request was answered with, if any.
    pub failure: Option<ApiError>,
    /// What a guard rule did (SPEC §12), and who approved the request.
    pub guard: Option<GuardOutcome>,
    pub approved_by: Option<String>,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    pub fn new(in_flight: &Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            started: Instant::now(),
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            caller: None,
            slug: None,
            grant: None,
            upstream_target: String::new(),
            audit_path: String::new(),
            upstream_started: None,
            upstream_elapsed: None,
            failure: None,
            bearer: None,
            guard: None,
            approved_by: None,
            _in_flight: InFlightGuard(in_flight.clone()),
        }
    }
}

/// Counts a request as in flight until its context is dropped (for the shutdown drain).
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
