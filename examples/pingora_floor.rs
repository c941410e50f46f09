//! The bare-Pingora floor of `benches/load.sh`: the smallest `ProxyHttp` — one upstream peer,
//! one injected header — on the same Pingora build (features `proxy`, `rustls`), the same kind
//! of runtime (a tokio multi-thread runtime of `THREADS` workers) and the same upstream peer
//! options as Gatehouse's proxy, served by Pingora's own listener service. What Gatehouse costs
//! above this is Gatehouse's own.
//!
//!   cargo build --release --example pingora_floor
//!   target/release/examples/pingora_floor 127.0.0.1:18090 127.0.0.1:18000 [THREADS [SNI CA_FILE]]
//!
//! With `SNI CA_FILE` the upstream is HTTPS: TLS with that server name, verified against the
//! PEM roots in CA_FILE, set on the connector (`ServerConf::ca_file`) as Gatehouse sets its
//! roots, so TLS sessions and connections are reused the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::Service as _;

struct Floor {
    upstream: SocketAddr,
    /// The upstream's TLS server name; empty for plain HTTP.
    sni: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let tls = !self.sni.is_empty();
        let mut peer = HttpPeer::new(self.upstream, tls, self.sni.clone());
        // Gatehouse's defaults (upstream.connect_timeout, read_timeout, idle_timeout).
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.write_timeout = Some(Duration::from_secs(60));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        upstream_request.insert_header("authorization", "Bearer floor-credential")?;
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pingora_floor LISTEN UPSTREAM [THREADS [SNI CA_FILE]]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let threads = match args.next() {
        Some(n) => n.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let sni = args.next().unwrap_or_default();
    let ca_file = args.next();
    if !sni.is_empty() && ca_file.is_none() {
        return Err(usage.into());
    }
    let conf = Arc::new(ServerConf {
        max_retries: 1,
        ca_file,
        ..ServerConf::default()
    });
    let mut service = pingora::proxy::http_proxy_service(&conf, Floor { upstream, sni });
    service.add_tcp(&listen.to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("floor-proxy")
        .enable_all()
        .build()?;
    // Runs until the process is killed (the load script sends SIGTERM).
    let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    runtime.block_on(service.start_service(None, shutdown_rx, 1));
    Ok(())
}
