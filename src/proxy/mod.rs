//! The agent-facing listener, on Pingora's `ProxyHttp`. The only module that imports `pingora`.
//!
//! Phase chart:
//! - `new_ctx`: a `RequestCtx`, counted in flight for the shutdown drain.
//! - `request_filter`: route; `/health` and `/discovery` are answered here; `/mcp` is handed
//!   to the MCP service after steps 1–2 (`mcp_endpoint`); for `/gateway/{slug}/…` SPEC §4
//!   steps 1–6 run in order (`access`, the token's rate limit right after step 2, path rules,
//!   credential) and a refusal is written through `respond::error`. The rate limit counts
//!   `/gateway` requests only, on both instances: an MCP `api_request` is counted once, by
//!   its inner gateway request, and the `/mcp` HTTP request that carried it is not.
//! - `upstream_peer`: resolve, egress-check and build the peer (`upstream`).
//! - `upstream_request_filter`: path, headers, credential (`headers`).
//! - `response_filter`: strip hop-by-hop and credential-revealing headers.
//! - `fail_to_proxy`: connect/timeout errors → 502/504 through the same table.
//! - `logging`: metrics and the audit event.

/// `AsyncWrite` for a stream wrapper whose writes go straight to its `inner` stream (the
/// wrappers only change reads, or only what the connection reports about itself).
macro_rules! forward_async_write {
    ($wrapper:ty) => {
        impl tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

mod client_timeouts;
mod context;
mod headers;
mod internal;
mod mcp_endpoint;
mod request_body;
mod resolve;
mod respond;
mod service;
mod tls_roots;
mod upstream;

pub use client_timeouts::ClientLimits;
pub use context::RequestCtx;
pub use internal::InternalGateway;
pub use resolve::Resolver;
pub use service::{ProxyHandle, start};
pub use tls_roots::{UpstreamCaError, UpstreamRoots};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use async_trait::async_trait;
use pingora::ErrorSource;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::access::{AccessControl, AccessError, Caller, Injection, TargetEntry, discovery};
use crate::api_error::ApiError;
use crate::audit::AuditSink;
use crate::config::UpstreamConfig;
use crate::domain::audit::{AuditEntry, Interface};
use crate::domain::guard::{
    GuardOutcome, GuardedRequest, MAX_GUARDED_BODY_BYTES, METHOD_OVERRIDE_HEADERS, RuleAction,
    body_preview, effective_method,
};
use crate::domain::upstream_path::{self, Route};
use crate::egress::EgressPolicy;
use crate::guard::{APPROVAL_HEADER, Approvals, GuardError};
use crate::mcp::{McpCaller, McpHttpService};
use crate::metrics::{Metrics, status_class};
use crate::rate_limit::RateLimiter;
use client_timeouts::Phase;

/// Shared state of the proxy listener.
pub struct GatewayProxy {
    pub access: Arc<AccessControl>,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub egress: EgressPolicy,
    pub resolver: Arc<Resolver>,
    pub upstream: UpstreamConfig,
    pub in_flight: Arc<AtomicUsize>,
    pub access_tokens: Arc<crate::credentials::AccessTokens>,
    /// Per-token rate limits (SPEC §11), shared by both instances.
    pub rate_limits: RateLimiter,
    /// Approvals of guarded requests (SPEC §12), shared by both instances.
    pub approvals: Approvals,
    /// `guard.elicitation_wait`: how long a held `api_request` waits for the person's answer.
    pub elicitation_wait: std::time::Duration,
    /// `gateway` on the listener; `mcp` on the instance behind the `api_request` tool.
    pub interface: Interface,
    /// The MCP endpoint, on the listener's instance only.
    pub mcp: Option<McpHttpService>,
    /// The CA bundle of `upstream.extra_ca_file`, for the connectors of both instances; `None`
    /// leaves Pingora to load the platform roots.
    pub upstream_roots: Option<Arc<UpstreamRoots>>,
}

impl GatewayProxy {
    /// The instance that serves `api_request` tool calls: the same state and the same
    /// phases, recording `interface = mcp`, serving `/gateway` requests only.
    pub fn for_mcp(&self) -> Self {
        Self {
            access: self.access.clone(),
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
            egress: self.egress,
            resolver: self.resolver.clone(),
            upstream: self.upstream.clone(),
            in_flight: self.in_flight.clone(),
            access_tokens: self.access_tokens.clone(),
            rate_limits: self.rate_limits.clone(),
            approvals: self.approvals.clone(),
            elicitation_wait: self.elicitation_wait,
            interface: Interface::Mcp,
            mcp: None,
            upstream_roots: self.upstream_roots.clone(),
        }
    }

    /// The gateway pipeline behind the MCP tools, on an instance of its own (`for_mcp`).
    pub fn internal_gateway(&self) -> InternalGateway {
        InternalGateway::new(pingora::proxy::http_proxy(
            &service::server_conf(self.upstream_roots.as_deref()),
            self.for_mcp(),
        ))
    }

    /// Steps 1–5 for `/gateway/{slug}{rest}`; on success the ctx holds the grant.
    fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        slug: &str,
        rest: &str,
    ) -> Result<(), ApiError> {
        let caller = self.authenticate(session, ctx)?;
        ctx.caller = Some(caller.token.clone());
        ctx.slug = Some(slug.to_owned());
        // After step 2, before step 3 (SPEC §11): the token is known. Unlimited tokens skip it.
        if let Some(limit) = caller.token.rate_limit {
            self.rate_limits
                .check(caller.token.id, limit)
                .map_err(|limited| ApiError::RateLimited {
                    retry_after_secs: limited.retry_after_secs,
                })?;
        }
        let grant = self
            .access
            .authorize(&caller, slug, &session.req_header().method)?;
        upstream_path::check_rest(rest).map_err(|_| ApiError::InvalidPath)?;
        ctx.grant = Some(grant);
        Ok(())
    }

    /// Step 6 for static credentials and the upstream target (base path + raw rest + raw
    /// query [+ query credential]).
    fn prepare_upstream(
        ctx: &mut RequestCtx,
        rest: &str,
        query: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(grant) = &ctx.grant else {
            return Ok(());
        };
        let extra_query = match &grant.target.injection {
            Injection::Query(pair) => Some(pair.as_str()),
            Injection::Broken => return Err(ApiError::CredentialBroken),
            Injection::Nothing
            | Injection::Headers(_)
            | Injection::Account(_)
            | Injection::RefreshedToken(_) => None,
        };
        ctx.upstream_target = upstream_path::upstream_target(
            grant.target.target.base_url.path(),
            rest,
            query,
            extra_query,
        );
        Ok(())
    }

    /// SPEC §12, after step 5: the target's guard rules, on the snapshot (no I/O). `block`
    /// refuses; `approval_required` goes on to [`Self::hold`]. Nothing has gone upstream when
    /// this refuses.
    fn guard(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        rest: &str,
    ) -> Result<Option<Held>, ApiError> {
        let Some(grant) = &ctx.grant else {
            return Ok(None);
        };
        let header = session.req_header();
        let overrides = METHOD_OVERRIDE_HEADERS
            .iter()
            .filter_map(|name| header.headers.get(*name))
            .map(|value| value.as_bytes());
        let method = effective_method(&header.method, overrides);
        let Some(verdict) = grant.target.guard.evaluate(&method, rest) else {
            return Ok(None);
        };
        match verdict.action {
            RuleAction::Allow => {
                ctx.guard = Some(GuardOutcome::Allow);
                Ok(None)
            }
            RuleAction::Block => {
                ctx.guard = Some(GuardOutcome::Block);
                Err(GuardError::Blocked {
                    reason: verdict.reason,
                }
                .into())
            }
            RuleAction::ApprovalRequired => {
                ctx.guard = Some(GuardOutcome::ApprovalRequired);
                Ok(Some(Held {
                    method,
                    reason: verdict.reason,
                    token_id: grant.token.id,
                    target: grant.target.clone(),
                }))
            }
        }
    }

    /// A request a rule holds: read the body (bounded), then pass only with a
    /// `Gatehouse-Approval` a person gave for exactly this request, else open an approval and
    /// refuse with it. Called boxed: its database futures stay out of every other request's
    /// `request_filter` future.
    async fn hold(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        held: Held,
        rest: &str,
        query: Option<&str>,
    ) -> Result<Result<(), ApiError>> {
        let Held {
            method,
            reason,
            token_id,
            target,
        } = held;
        let Some(body) = request_body::read_for_upstream(session, MAX_GUARDED_BODY_BYTES).await?
        else {
            // The rest of the body is not read: the connection cannot carry another request.
            session.set_keepalive(None);
            return Ok(Err(GuardError::BodyTooLarge.into()));
        };
        let request = GuardedRequest::new(token_id, target.target.id, &method, rest, query, &body);
        let named = session
            .req_header()
            .headers
            .get(APPROVAL_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let outcome = match named {
            Some(id) => match self.approvals.redeem(&id, &request).await {
                Ok(approver) => {
                    ctx.guard = Some(GuardOutcome::Approved);
                    ctx.approved_by = Some(approver);
                    Ok(())
                }
                Err(error) => {
                    if matches!(error, GuardError::Denied { .. }) {
                        ctx.guard = Some(GuardOutcome::Denied);
                    }
                    Err(error.into())
                }
            },
            None => {
                let preview = body_preview(&body, &target.secrets);
                match self.approvals.open(request, preview, reason.clone()).await {
                    Ok(ticket) => Err(GuardError::ApprovalRequired { reason, ticket }.into()),
                    Err(error) => Err(GuardError::Store(error).into()),
                }
            }
        };
        Ok(outcome)
    }

    /// Steps 1–2, counting refusals in `gatehouse_auth_failures_total`.
    fn authenticate(&self, session: &Session, ctx: &RequestCtx) -> Result<Caller, AccessError> {
        let authorization = session
            .req_header()
            .headers
            .get("authorization")
            .map(|v| v.as_bytes());
        self.access
            .authenticate(authorization, ctx.client_ip)
            .inspect_err(|error| {
                if let Some(reason) = error.auth_failure_reason() {
                    self.metrics
                        .auth_failures
                        .with_label_values(&[reason])
                        .inc();
                }
            })
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: ApiError,
    ) -> Result<bool> {
        respond::error(session, &error, self.interface == Interface::Mcp).await?;
        ctx.failure = Some(error);
        Ok(true)
    }

    /// `/mcp`: steps 1–2 on every HTTP request, then the MCP service.
    async fn serve_mcp(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(service) = &self.mcp else {
            return self.refuse(session, ctx, ApiError::NotFound("route")).await;
        };
        let caller = match self.authenticate(session, ctx) {
            Ok(caller) => caller,
            Err(error) => return self.refuse(session, ctx, error.into()).await,
        };
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .cloned();
        let Some(authorization) = authorization else {
            return self
                .refuse(session, ctx, AccessError::MissingToken.into())
                .await;
        };
        let caller = McpCaller {
            caller,
            authorization,
            client_ip: ctx.client_ip,
        };
        let elicit = mcp_endpoint::Elicitation {
            approvals: &self.approvals,
            wait: self.elicitation_wait,
        };
        match mcp_endpoint::serve(session, service, caller, &elicit).await? {
            Ok(()) => Ok(true),
            Err(error) => self.refuse(session, ctx, error).await,
        }
    }

    /// The audit row of a request that passed steps 1–2; `target` is the known target, if any.
    /// The last use of `ctx`: its strings move into the row.
    fn audit_entry(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        target: Option<&TargetEntry>,
        status: u16,
    ) -> Option<AuditEntry> {
        let token = ctx.caller.as_ref()?;
        let slug = ctx.slug.take()?;
        Some(AuditEntry {
            // Time-ordered ids: rows land at the end of the primary-key index, not at random
            // pages of it, which keeps the batched insert cheap as the table grows.
            id: uuid::Uuid::now_v7(),
            token_id: Some(token.id),
            token_name: token.name.clone(),
            target_id: target.map(|t| t.target.id),
            target_slug: slug,
            method: session.req_header().method.as_str().to_owned(),
            path: std::mem::take(&mut ctx.audit_path),
            status_code: status,
            client_ip: ctx.client_ip.to_string(),
            duration_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            upstream_ms: ctx
                .upstream_elapsed
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            error: ctx.failure.as_ref().map(|e| e.audit_code().to_owned()),
            interface: self.interface,
            guard_action: ctx.guard,
            approved_by: ctx.approved_by.take(),
            created_at: chrono::Utc::now(),
        })
    }
}

/// A request a guard rule holds for approval, as [`GatewayProxy::guard`] found it.
struct Held {
    /// The effective method (a method-override header counts).
    method: http::Method,
    reason: String,
    token_id: uuid::Uuid,
    target: Arc<TargetEntry>,
}

fn client_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip())
}

/// Connect and timeout failures, classified for the one error table.
fn upstream_failure(error: &Error) -> Option<ApiError> {
    match error.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => Some(ApiError::UpstreamTimeout),
        _ if error.esource() == &ErrorSource::Upstream => Some(ApiError::UpstreamUnreachable),
        _ => None,
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(&self.in_flight)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // The head is complete: its deadline ends; a body gets the stall deadline.
        let next = if session.is_body_empty() {
            Phase::Serving
        } else {
            Phase::Body
        };
        client_timeouts::enter(session.as_downstream().stream(), next);
        ctx.client_ip = client_ip(session);
        if headers::head_too_large(session.req_header()) {
            // The rest of this client's input is not worth reading.
            session.set_keepalive(None);
            return self.refuse(session, ctx, ApiError::HeadersTooLarge).await;
        }
        let header = session.req_header();
        let host = header.headers.get("host").and_then(|h| h.to_str().ok());
        let target = match upstream_path::origin_form(header.raw_path(), host) {
            Ok(target) => target.to_owned(),
            Err(_) => return self.refuse(session, ctx, ApiError::InvalidPath).await,
        };
        let route = upstream_path::classify(&target);
        if self.interface == Interface::Mcp && !matches!(route, Route::Gateway { .. }) {
            return self
                .refuse(session, ctx, AccessError::TargetNotFound.into())
                .await;
        }
        match route {
            Route::Health => {
                respond::json(session, 200, &serde_json::json!({"status": "ok"})).await?;
                Ok(true)
            }
            Route::Discovery => match self.authenticate(session, ctx) {
                Ok(caller) => {
                    let body = discovery::body(&self.access.visible_targets(&caller));
                    respond::json(session, 200, &body).await?;
                    Ok(true)
                }
                Err(error) => self.refuse(session, ctx, error.into()).await,
            },
            // Boxed: the MCP hand-off's future is large and would otherwise be part of every
            // request's.
            Route::Mcp => Box::pin(self.serve_mcp(session, ctx)).await,
            Route::Gateway { slug, rest, query } => {
                ctx.audit_path = target.split('?').next().unwrap_or_default().to_owned();
                if let Err(error) = self.admit(session, ctx, slug, rest) {
                    return self.refuse(session, ctx, error).await;
                }
                match self.guard(session, ctx, rest) {
                    Ok(None) => {}
                    Ok(Some(held)) => {
                        let outcome = Box::pin(self.hold(session, ctx, held, rest, query)).await?;
                        if let Err(error) = outcome {
                            return self.refuse(session, ctx, error).await;
                        }
                    }
                    Err(error) => return self.refuse(session, ctx, error).await,
                }
                if let Err(error) = Self::prepare_upstream(ctx, rest, query) {
                    return self.refuse(session, ctx, error).await;
                }
                // Step 6 for OAuth credentials: an access token (may wait on a refresh).
                let target = ctx.grant.as_ref().map(|g| g.target.clone());
                let token = match target.as_ref().map(|t| &t.injection) {
                    Some(Injection::Account(account)) => {
                        Some(self.access_tokens.access_token(account.id).await)
                    }
                    Some(Injection::RefreshedToken(method)) => {
                        Some(self.access_tokens.method_token(method).await)
                    }
                    _ => None,
                };
                match token {
                    Some(Ok(token)) => ctx.bearer = Some(token),
                    Some(Err(error)) => return self.refuse(session, ctx, error.into()).await,
                    None => {}
                }
                Ok(false)
            }
            Route::NotFound => {
                respond::json(session, 404, &serde_json::json!({"error": "not found"})).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if end_of_stream {
            client_timeouts::enter(session.as_downstream().stream(), Phase::Serving);
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(grant) = &ctx.grant else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no grant for an upstream request",
            ));
        };
        let base_url = &grant.target.target.base_url;
        match upstream::peer(base_url, self.egress, &self.resolver, &self.upstream).await {
            Ok(peer) => Ok(peer),
            Err(error) => {
                ctx.failure = Some(error);
                Err(Error::explain(
                    ErrorType::ConnectRefused,
                    "upstream refused before connecting",
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(grant) = &ctx.grant else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no grant for an upstream request",
            ));
        };
        upstream_request.set_raw_path(ctx.upstream_target.as_bytes())?;
        headers::rewrite_request(upstream_request, &grant.target, ctx.bearer.as_deref())?;
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let secrets = ctx.grant.as_ref().map_or(&[][..], |g| &g.target.secrets);
        headers::rewrite_response(upstream_response, secrets, ctx.bearer.as_deref());
        if self.interface == Interface::Mcp {
            // Only the gateway's own answers may carry the marker.
            upstream_response.remove_header(internal::REFUSAL_HEADER);
        }
        Ok(())
    }

    /// Never retry once a request may have reached the upstream (SPEC §4 step 7).
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        _session: &mut Session,
        mut error: Box<Error>,
        _ctx: &mut Self::CTX,
        _client_reused: bool,
    ) -> Box<Error> {
        error.set_retry(false);
        error
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let failure = ctx.failure.take().or_else(|| upstream_failure(error));
        // The connection is not reused after a failed proxy attempt; say so in the answer.
        session.set_keepalive(None);
        let code = match failure {
            Some(failure) => {
                let status = failure.status().as_u16();
                if session.response_written().is_none()
                    && respond::error(session, &failure, self.interface == Interface::Mcp)
                        .await
                        .is_err()
                {
                    tracing::debug!("could not write the error response");
                }
                ctx.failure = Some(failure);
                status
            }
            // The agent's side broke (closed, sent garbage): nothing useful to write.
            None => match error.etype() {
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                _ => {
                    let _ = session.respond_error(400).await;
                    400
                }
            },
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _error: Option<&Error>, ctx: &mut Self::CTX) {
        // The answer is out: a kept-alive connection is idle until the next request head; one
        // that closes keeps no deadline for its last moments.
        let next = if session.as_downstream().get_keepalive().is_some() {
            Phase::Idle
        } else {
            Phase::Serving
        };
        client_timeouts::enter(session.as_downstream().stream(), next);
        if let Some(started) = ctx.upstream_started {
            let elapsed = started.elapsed();
            ctx.upstream_elapsed = Some(elapsed);
            self.metrics
                .upstream_duration
                .observe(elapsed.as_secs_f64());
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        // The target, looked up once: the metric label (bounded: unknown slugs are "-") and the
        // audit row's target id.
        let target = match (&ctx.grant, &ctx.slug) {
            (Some(grant), _) => Some(grant.target.clone()),
            (None, Some(slug)) => self.access.snapshot().target(slug),
            (None, None) => None,
        };
        if let Some(slug) = &ctx.slug {
            let label = if target.is_some() { slug.as_str() } else { "-" };
            self.metrics
                .requests
                .with_label_values(&[label, status_class(status), self.interface.as_str()])
                .inc();
            self.metrics
                .request_duration
                .observe(ctx.started.elapsed().as_secs_f64());
            if matches!(ctx.failure, Some(ApiError::RateLimited { .. })) {
                self.metrics.rate_limited.with_label_values(&[label]).inc();
            }
            if let Some(action) = ctx.guard {
                self.metrics
                    .guard_actions
                    .with_label_values(&[label, action.as_str()])
                    .inc();
            }
        }
        if let Some(entry) = self.audit_entry(session, ctx, target.as_deref(), status) {
            self.audit.record(entry);
        }
    }

    /// Pingora's default summary includes the query string, which may carry secrets.
    fn request_summary(&self, session: &Session, _ctx: &Self::CTX) -> String {
        let header = session.req_header();
        format!("{} {}", header.method, header.uri.path())
    }
}
