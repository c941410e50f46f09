//! Running the Pingora proxy service on a pool of its own worker threads.
//!
//! We do not use `pingora::server::Server`: it owns signal handling, sleeps the whole grace
//! period on every shutdown and binds listeners itself with no way to report the bound port.
//! Instead the listener is bound here (a taken port is a clean startup error naming
//! `proxy.listen`, and port 0 works in tests) and our own accept loop hands each connection,
//! wrapped in `ClientStream` (the client deadlines Pingora lacks), to Pingora's `HttpProxy`
//! app, request after request while the client keeps it alive. On shutdown the accept loop
//! stops and we wait until in-flight requests finish or the grace period ends.
//!
//! The service runs on a tokio runtime of its own with `proxy.threads` workers, so the number
//! of threads that serve agents is set apart from the admin API, the audit writer and the
//! background work, which stay on the main runtime. (Pingora's "no-steal" runtime, one
//! single-threaded runtime per worker, was measured and not kept: Pingora parks each idle
//! upstream connection's watcher task on a random worker, so reusing a pooled connection
//! crossed threads and often failed; docs/performance.md.)

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use pingora::apps::ServerApp as _;
use pingora::protocols::Stream;
use pingora::protocols::l4::listener::Listener;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::ServerConf;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::GatewayProxy;
use super::client_timeouts::{ClientLimits, ClientStream};
use super::tls_roots::UpstreamRoots;

/// A running proxy listener.
pub struct ProxyHandle {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    in_flight: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    /// Taken by `stop_workers`; a handle dropped without it ends the workers in the background.
    runtime: Option<Runtime>,
}

/// Pingora's settings for both proxy instances (the listener's and the MCP tools'), so both
/// trust the same upstream roots.
pub(super) fn server_conf(roots: Option<&UpstreamRoots>) -> Arc<ServerConf> {
    Arc::new(ServerConf {
        // A failed connect may be retried once (nothing reached the upstream); requests that
        // may have reached it are never retried (`GatewayProxy::error_while_proxy`).
        max_retries: 1,
        // Connector-wide, not per peer: one rustls config for every connection, so TLS
        // sessions resume (`tls_roots`). Unset: Pingora loads the platform roots.
        ca_file: roots.map(|roots| roots.path().to_owned()),
        ..ServerConf::default()
    })
}

/// Start serving `proxy` on an already bound listener, on `threads` worker threads, with the
/// client deadlines of `limits` on every connection.
pub fn start(
    listener: TcpListener,
    proxy: GatewayProxy,
    threads: usize,
    limits: ClientLimits,
) -> std::io::Result<ProxyHandle> {
    let local_addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let in_flight = proxy.in_flight.clone();
    let conf = server_conf(proxy.upstream_roots.as_deref());
    let app = Arc::new(pingora::proxy::http_proxy(&conf, proxy));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("gatehouse-proxy")
        .enable_all()
        .build()?;
    // The listener joins the runtime that serves it (tokio needs its reactor).
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let task = runtime.spawn(accept_loop(
        Listener::from(listener),
        app,
        Arc::new(limits),
        shutdown_rx,
    ));
    Ok(ProxyHandle {
        local_addr,
        shutdown,
        in_flight,
        task,
        runtime: Some(runtime),
    })
}

/// Accept connections until shutdown; each is served on a task of its own (what Pingora's own
/// listener service does, plus the client deadlines of `client_timeouts`).
async fn accept_loop(
    listener: Listener,
    app: Arc<HttpProxy<GatewayProxy>>,
    limits: Arc<ClientLimits>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        let mut stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                // Out of file descriptors: accept fails at once until some close; calm down.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if stream.set_nodelay().is_err() {
            continue;
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            // Pingora serves every request of a kept-alive HTTP/1.1 connection inside this
            // call; `GatewayProxy::logging` marks the stream idle between them.
            let mut next: Option<Stream> = Some(Box::new(ClientStream::new(stream, limits)));
            while let Some(connection) = next.take() {
                next = app.process_new(connection, &shutdown).await;
            }
        });
    }
}

impl ProxyHandle {
    /// Stop accepting, then wait for in-flight requests to finish, at most `grace`.
    /// Returns the number of requests still in flight when the wait ended. The worker threads
    /// keep running until `stop_workers`: connections they opened (e.g. to the database while
    /// refreshing a token) may still be in use by the rest of the app until it has stopped.
    pub async fn shutdown(&mut self, grace: Duration) -> usize {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout_at(deadline, &mut self.task).await;
        self.in_flight.load(Ordering::Acquire)
    }

    /// End the worker threads and wait for them (off the async workers: that wait blocks).
    pub async fn stop_workers(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside async code (where tests drop
        // a running app); this variant does not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
