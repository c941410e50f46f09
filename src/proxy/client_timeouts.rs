//! Deadlines on the agent's side of a connection, which Pingora does not give: its read timeout
//! applies to each read, so a client that sends its request head one byte a second is never
//! cut off. `ClientStream` wraps each accepted connection and enforces, like nginx's
//! `client_header_timeout` / `keepalive_timeout` / `client_body_timeout`:
//!
//! - `Head`: the whole request head within `proxy.header_read_timeout` of its first byte
//!   (of the connection's start, for the first request);
//! - `Idle`: between requests on a kept-alive connection, at most `proxy.keepalive_timeout`;
//! - `Body`: while the request body is read, no gap between reads longer than
//!   `proxy.body_read_timeout` (a stalled upload);
//! - `Serving`: no deadline (the response may stream for as long as the upstream sends).
//!
//! The proxy phases move a stream between phases (`enter`); a read past its deadline fails
//! with `TimedOut`, which ends the connection, and is counted in
//! `gatehouse_client_timeouts_total{phase}`.
//!
//! The timer is lazy: a phase change only records when the phase began, and the one tokio
//! timer of the connection, armed at most the shortest limit ahead, checks the real deadline
//! when it fires and re-arms itself if that lies later. Moving the timer on every phase change
//! cost two timer-wheel updates (a lock each) per request; now a busy connection re-arms about
//! once per shortest limit (docs/performance.md).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::ProxyConfig;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Head = 0,
    Body = 1,
    Serving = 2,
    Idle = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Head,
            1 => Self::Body,
            2 => Self::Serving,
            _ => Self::Idle,
        }
    }
}

/// The limits, and a counter per phase resolved once (no label lookup when one fires).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    header: Duration,
    keepalive: Duration,
    body: Duration,
    /// The shortest of the three: how far ahead the timer may be armed.
    shortest: Duration,
    header_timeouts: IntCounter,
    keepalive_timeouts: IntCounter,
    body_timeouts: IntCounter,
}

impl ClientLimits {
    pub fn new(config: &ProxyConfig, metrics: &Metrics) -> Self {
        let counter = |phase: &str| metrics.client_timeouts.with_label_values(&[phase]);
        let shortest = config
            .header_read_timeout
            .min(config.keepalive_timeout)
            .min(config.body_read_timeout);
        Self {
            header: config.header_read_timeout,
            keepalive: config.keepalive_timeout,
            body: config.body_read_timeout,
            shortest,
            header_timeouts: counter("header"),
            keepalive_timeouts: counter("keepalive"),
            body_timeouts: counter("body"),
        }
    }

    fn limit(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Head => Some(self.header),
            Phase::Idle => Some(self.keepalive),
            Phase::Body => Some(self.body),
            Phase::Serving => None,
        }
    }
}

/// An accepted connection with the deadlines above.
#[derive(Debug)]
pub struct ClientStream {
    inner: TcpStream,
    limits: Arc<ClientLimits>,
    /// Set by the proxy phases (through `&self`), read by `poll_read`.
    phase: AtomicU8,
    /// The phase `since` belongs to.
    timed_phase: Phase,
    /// When `timed_phase` began; in `Body`, when data last arrived. Its deadline is this plus
    /// the phase's limit.
    since: Instant,
    /// Fires at or before the deadline (never after it); see the module comment.
    timer: Pin<Box<Sleep>>,
}

impl ClientStream {
    pub fn new(inner: TcpStream, limits: Arc<ClientLimits>) -> Self {
        let now = Instant::now();
        // `shortest` is at most the header limit: the invariant of `expired` holds from here.
        let first = now + limits.shortest;
        Self {
            inner,
            limits,
            phase: AtomicU8::new(Phase::Head as u8),
            timed_phase: Phase::Head,
            since: now,
            timer: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Move to `phase`; its deadline counts from the next read.
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Note a phase change made by the proxy: its clock starts now.
    fn follow_phase(&mut self) -> Phase {
        let phase = Phase::from_u8(self.phase.load(Ordering::Relaxed));
        if phase != self.timed_phase {
            self.timed_phase = phase;
            self.since = Instant::now();
        }
        phase
    }

    /// Whether the deadline of `phase` has passed (registering the waker otherwise). The timer
    /// is never later than the deadline: every limit is at least `shortest`, and the timer is
    /// armed at most `shortest` ahead.
    fn expired(&mut self, phase: Phase, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let deadline = self.limits.limit(phase).map(|limit| self.since + limit);
            if deadline.is_some_and(|deadline| deadline <= now) {
                return true;
            }
            // Early (or no deadline in this phase): wait again, at most `shortest`.
            let next = now + self.limits.shortest;
            let at = deadline.map_or(next, |deadline| deadline.min(next));
            self.timer.as_mut().reset(at);
        }
    }

    fn count(&self, phase: Phase) {
        match phase {
            Phase::Head => self.limits.header_timeouts.inc(),
            Phase::Idle => self.limits.keepalive_timeouts.inc(),
            Phase::Body => self.limits.body_timeouts.inc(),
            Phase::Serving => {}
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.follow_phase();
        let filled = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled {
                    match phase {
                        // The next request began: its head has `header_read_timeout`.
                        Phase::Idle => this.enter(Phase::Head),
                        Phase::Body => this.since = Instant::now(),
                        Phase::Head | Phase::Serving => {}
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.expired(phase, cx) {
                    this.count(phase);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client too slow",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

forward_async_write!(ClientStream);

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest);
    }
}

#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Move the agent's connection behind `session` to `phase` (a no-op for other streams, such
/// as the in-memory pipe of MCP tool calls).
pub fn enter(stream: Option<&pingora::protocols::Stream>, phase: Phase) {
    if let Some(client) = stream.and_then(|s| s.as_any().downcast_ref::<ClientStream>()) {
        client.enter(phase);
    }
}
