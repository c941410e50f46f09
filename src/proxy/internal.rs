//! The hand-off from an MCP `api_request` to the gateway pipeline, in process: the request is
//! written as HTTP/1.1 by Pingora's own client session into an in-memory pipe, and served on
//! the other end by a second `HttpProxy<GatewayProxy>` that shares all state with the listener
//! (snapshot, credentials, token cache, resolver, audit, metrics) and differs only in its
//! `interface` (`mcp`). So `/gateway` and `api_request` run the same `ProxyHttp` phases —
//! one pipeline, no second copy of any rule — without a loopback TCP hop.
//!
//! The pipe reports the agent's own address as its peer, so the IP allowlist (step 2) sees the
//! agent, not a loopback hop. Answers the gateway wrote itself carry [`REFUSAL_HEADER`], which
//! this instance removes from every upstream response, so an upstream cannot forge it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::HttpServerApp as _;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::sync::watch;

use super::GatewayProxy;
use crate::mcp::{ForwardError, ForwardRequest, ForwardResponse, Forwarder};

/// Set on answers the gateway wrote itself (refusals, 502/504) by the MCP instance only.
pub const REFUSAL_HEADER: &str = "x-gatehouse-refusal";

/// Buffer of each direction of the pipe; bodies stream through it.
const PIPE_BUFFER: usize = 64 * 1024;

/// The gateway pipeline behind the MCP tools.
pub struct InternalGateway {
    proxy: Arc<HttpProxy<GatewayProxy>>,
    shutdown: ShutdownWatch,
    /// Keeps `shutdown` open; internal connections serve one request each and never idle.
    _shutdown_sender: watch::Sender<bool>,
}

impl InternalGateway {
    pub fn new(proxy: HttpProxy<GatewayProxy>) -> Self {
        let (sender, shutdown) = watch::channel(false);
        Self {
            proxy: Arc::new(proxy),
            shutdown,
            _shutdown_sender: sender,
        }
    }
}

fn failed(error: impl std::fmt::Display) -> ForwardError {
    ForwardError(error.to_string())
}

#[async_trait]
impl Forwarder for InternalGateway {
    async fn forward(
        &self,
        request: ForwardRequest,
        limit: u64,
    ) -> Result<ForwardResponse, ForwardError> {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let server = AgentPipe::new(server, request.client_ip);
        let proxy = self.proxy.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let session = ServerSession::new_http1(Box::new(server));
            // One request per pipe (`Connection: close`): nothing to reuse.
            let _ = proxy.process_new_http(session, &shutdown).await;
        });

        let mut session = ClientSession::new(Box::new(client));
        let mut header = RequestHeader::build(
            request.method,
            request.target.as_bytes(),
            Some(request.headers.len() + 4),
        )
        .map_err(failed)?;
        header
            .insert_header(http::header::HOST, "gatehouse.internal")
            .map_err(failed)?;
        header
            .insert_header(http::header::AUTHORIZATION, request.authorization)
            .map_err(failed)?;
        for (name, value) in request.headers {
            header.append_header(name, value).map_err(failed)?;
        }
        header
            .insert_header(http::header::CONTENT_LENGTH, request.body.len().to_string())
            .map_err(failed)?;
        header
            .insert_header(http::header::CONNECTION, "close")
            .map_err(failed)?;
        session
            .write_request_header(Box::new(header))
            .await
            .map_err(failed)?;
        if !request.body.is_empty() {
            session.write_body(&request.body).await.map_err(failed)?;
        }
        session.finish_body().await.map_err(failed)?;

        session.read_response().await.map_err(failed)?;
        let response = session
            .resp_header()
            .ok_or_else(|| ForwardError("no response header".to_owned()))?;
        let status = response.status.as_u16();
        let mut headers = response.headers.clone();
        let refused = headers.remove(REFUSAL_HEADER).is_some();
        // The framing of the pipe, not part of the answer (the upstream's own hop-by-hop
        // headers were already removed by the pipeline).
        headers.remove(http::header::CONNECTION);
        headers.remove(http::header::TRANSFER_ENCODING);
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());

        let (body, size) = read_body(&mut session, limit, declared).await?;
        Ok(ForwardResponse {
            status,
            headers,
            body,
            size,
            refused,
        })
    }
}

/// At most `limit` bytes of the body, and the body's full length. With a declared length the
/// rest is not read (dropping the pipe ends the request); without one it is read and counted.
async fn read_body(
    session: &mut ClientSession,
    limit: u64,
    declared: Option<u64>,
) -> Result<(Bytes, u64), ForwardError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = BytesMut::new();
    let mut size: u64 = 0;
    while let Some(chunk) = session.read_body_bytes().await.map_err(failed)? {
        size += chunk.len() as u64;
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..room.min(chunk.len())]);
        if body.len() >= limit
            && let Some(declared) = declared
            && declared > size
        {
            return Ok((body.freeze(), declared));
        }
    }
    Ok((body.freeze(), size))
}

/// The server end of the pipe: reports the agent's address as the connection's peer.
#[derive(Debug)]
struct AgentPipe {
    inner: DuplexStream,
    digest: Arc<SocketDigest>,
}

impl AgentPipe {
    fn new(inner: DuplexStream, agent: std::net::IpAddr) -> Self {
        // No file descriptor behind the pipe: the addresses are set, never looked up.
        let digest = SocketDigest::from_raw_fd(-1);
        let _ = digest
            .peer_addr
            .set(Some(SocketAddr::Inet(std::net::SocketAddr::new(agent, 0))));
        let _ = digest.local_addr.set(None);
        Self {
            inner,
            digest: Arc::new(digest),
        }
    }
}

impl AsyncRead for AgentPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

forward_async_write!(AgentPipe);

#[async_trait]
impl Shutdown for AgentPipe {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for AgentPipe {
    fn id(&self) -> UniqueIDType {
        0
    }
}

impl Ssl for AgentPipe {}

impl GetTimingDigest for AgentPipe {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for AgentPipe {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for AgentPipe {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

impl Peek for AgentPipe {}
