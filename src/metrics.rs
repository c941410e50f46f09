//! `Metrics`: every family of SPEC §8 this build serves, on the app-owned Prometheus registry
//! (never the global default, so two app instances in one test process do not share counters).

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 0.5 ms to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

pub struct Metrics {
    registry: Registry,
    /// `{target, status, interface}`: target slug (or `-` when unknown, to bound cardinality),
    /// status class, and `gateway` or `mcp`.
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    /// `{reason}`: missing, malformed, unknown, revoked, ip_not_allowed.
    pub auth_failures: IntCounterVec,
    pub audit_dropped: IntCounter,
    /// `{result}`: hit or miss of the connected-account access-token cache.
    pub token_cache: IntCounterVec,
    /// `{provider, outcome}`: success, invalid_grant, transient.
    pub token_refresh: IntCounterVec,
    /// Requests that joined an in-flight refresh instead of starting one.
    pub token_refresh_waiters: IntCounter,
    /// `{provider, status}`: connected accounts by status.
    pub connected_accounts: IntGaugeVec,
    /// `{phase}`: header, keepalive, body — clients disconnected for being too slow.
    pub client_timeouts: IntCounterVec,
    /// `{outcome}`: delivered, retry (an attempt failed, another is scheduled), failed (the
    /// last attempt of the schedule failed) — one count per webhook delivery attempt.
    pub webhook_deliveries: IntCounterVec,
    /// `{target}`: requests refused for their token's rate limit (by target slug, or `-`;
    /// never by token, whose ids are unbounded).
    pub rate_limited: IntCounterVec,
    /// What guard rules did (SPEC §12): `allow`, `block`, `approval_required`, `approved`,
    /// `denied`, by target.
    pub guard_actions: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gatehouse_build_info",
                "Build information; the value is always 1",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_requests_total",
                "Proxied requests by target, status class and interface (gateway or mcp)",
            ),
            &["target", "status", "interface"],
        )?;
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_request_duration_seconds",
                "Whole request time on the proxy listener",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let upstream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "gatehouse_upstream_duration_seconds",
                "Time from sending the request upstream to the end of its response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "gatehouse_auth_failures_total",
                "Requests refused at the token or IP check",
            ),
            &["reason"],
        )?;
        let audit_dropped = IntCounter::new(
            "gatehouse_audit_dropped_total",
            "Audit events dropped because the writer's queue was full",
        )?;
        let token_cache = IntCounterVec::new(
            Opts::new(
                "gatehouse_token_cache_total",
                "Access-token cache lookups of connected accounts",
            ),
            &["result"],
        )?;
        let token_refresh = IntCounterVec::new(
            Opts::new(
                "gatehouse_token_refresh_total",
                "Access-token refreshes at the provider by outcome",
            ),
            &["provider", "outcome"],
        )?;
        let token_refresh_waiters = IntCounter::new(
            "gatehouse_token_refresh_waiters_total",
            "Requests that joined an in-flight refresh",
        )?;
        let connected_accounts = IntGaugeVec::new(
            Opts::new(
                "gatehouse_connected_accounts",
                "Connected accounts by provider and status",
            ),
            &["provider", "status"],
        )?;
        let client_timeouts = IntCounterVec::new(
            Opts::new(
                "gatehouse_client_timeouts_total",
                "Agent connections closed because the client was too slow, by phase",
            ),
            &["phase"],
        )?;
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "gatehouse_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, retry, failed)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(webhook_deliveries.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "gatehouse_rate_limited_total",
                "Requests refused with 429 because their token's rate limit was used up, by target",
            ),
            &["target"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        let guard_actions = IntCounterVec::new(
            Opts::new(
                "gatehouse_guard_actions_total",
                "Requests a guard rule matched, by target and what it did (allow, block, \
                 approval_required, approved, denied)",
            ),
            &["target", "action"],
        )?;
        registry.register(Box::new(guard_actions.clone()))?;
        registry.register(Box::new(client_timeouts.clone()))?;
        registry.register(Box::new(token_cache.clone()))?;
        registry.register(Box::new(token_refresh.clone()))?;
        registry.register(Box::new(token_refresh_waiters.clone()))?;
        registry.register(Box::new(connected_accounts.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(audit_dropped.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            auth_failures,
            audit_dropped,
            token_cache,
            token_refresh,
            token_refresh_waiters,
            connected_accounts,
            client_timeouts,
            webhook_deliveries,
            rate_limited,
            guard_actions,
        })
    }

    /// The Prometheus text format of every registered family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// `2xx`, `4xx`…: the status label, bounded to six values.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
