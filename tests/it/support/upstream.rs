//! `FakeUpstream`: a real HTTP/1.1 server on 127.0.0.1 standing in for an upstream API. It
//! records every request exactly as it arrived (method, raw path and query, headers, body length
//! and SHA-256) and serves a few routes, matched on the end of the path so any base path works:
//!
//! | path ends with | answer |
//! |---|---|
//! | `/status/{code}` | that status, `Retry-After: 7`, a JSON body |
//! | `/echo-auth` | 200, echoing the received `Authorization` in `X-Echo-Authorization` and `X-Api-Key` in `X-Echo-Api-Key` (plus `X-Plain: kept`) |
//! | `/hop` | 200 with hop-by-hop headers (`Connection: x-hop-named`, `X-Hop-Named`, `Keep-Alive`, `Proxy-Connection`) and `X-Kept: 1` |
//! | `/token` | 200, an OAuth token response with access token [`OAUTH_ACCESS_TOKEN`], 1 hour |
//! | `/redirect` | 302 to `http://{this server}/landing` (a followed redirect would be recorded) |
//! | `/oauth-error/{code}` | 400, an OAuth error response `{"error": code, "error_description"}` |
//! | `/slow/{ms}` | 200 after sleeping `ms` milliseconds |
//! | `/download` | 200 with [`DOWNLOAD_LEN`] bytes of [`download_body`] |
//! | anything else | 200 echo: `{"method", "target", "body_len", "body_sha256"}` |

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest as _, Sha256};

/// The access token the `/token` route hands out.
pub const OAUTH_ACCESS_TOKEN: &str = "oauth-access-canary-0123456789";

/// Size of the `/download` body: 32 MiB.
pub const DOWNLOAD_LEN: usize = 32 * 1024 * 1024;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as they arrived on the request line.
    pub target: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body as text when it is under 64 KiB (form posts to `/token`), else empty.
    pub body_text: String,
}

impl Received {
    /// Every value of a header, lossily as text.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The first value of a header, lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

#[derive(Clone)]
struct Shared {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            addr,
            received: received.clone(),
        };
        let router = Router::new().fallback(handle).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Host` header value an upstream request should carry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }

    /// The most recent request; panics when there was none.
    #[track_caller]
    pub fn last(&self) -> Received {
        self.received
            .lock()
            .last()
            .cloned()
            .expect("the upstream received a request")
    }

    /// Forget what was received so far.
    pub fn clear(&self) {
        self.received.lock().clear();
    }

    /// Wait (at most `limit`) until at least `count` requests arrived.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        for _ in 0..10_000 {
            if self.count() >= count {
                return true;
            }
            if std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count() >= count
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on loopback where nothing listens (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The deterministic `/download` body (generated once per test process).
pub fn download_body() -> Bytes {
    static BODY: OnceLock<Bytes> = OnceLock::new();
    BODY.get_or_init(|| Bytes::from(pattern(DOWNLOAD_LEN, 7)))
        .clone()
}

pub fn download_sha256() -> String {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| sha256_hex(&download_body())).clone()
}

/// `len` bytes of a non-repeating-looking pattern, different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 256 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.to_string());
    let path = parts.uri.path().to_owned();
    let received = Received {
        method: parts.method.as_str().to_owned(),
        target: target.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body_len: body.len(),
        body_sha256: sha256_hex(&body),
        body_text: if body.len() < 64 * 1024 {
            String::from_utf8_lossy(&body).into_owned()
        } else {
            String::new()
        },
    };
    shared.received.lock().push(received.clone());

    let mut segments = path.rsplit('/');
    let last = segments.next().unwrap_or_default();
    let previous = segments.next().unwrap_or_default();
    match (previous, last) {
        ("status", code) => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::IM_A_TEAPOT);
            Response::builder()
                .status(status)
                .header(header::RETRY_AFTER, "7")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-upstream-extra", "1")
                .body(Body::from(format!(
                    "{{\"upstream_status\":{}}}",
                    status.as_u16()
                )))
                .unwrap()
        }
        ("oauth-error", code) => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({"error": code, "error_description": "refused by the fake issuer"})
                    .to_string(),
            ))
            .unwrap(),
        ("slow", millis) => {
            tokio::time::sleep(Duration::from_millis(millis.parse().unwrap_or(1000))).await;
            json_echo(&received)
        }
        (_, "echo-auth") => {
            let mut builder = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-plain", "kept");
            for (from, to) in [
                ("authorization", "x-echo-authorization"),
                ("x-api-key", "x-echo-api-key"),
            ] {
                if let Some(value) = parts.headers.get(from) {
                    builder = builder.header(to, value.clone());
                }
            }
            builder.body(Body::from("{\"echoed\":true}")).unwrap()
        }
        (_, "hop") => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "x-hop-named")
            .header("x-hop-named", "1")
            .header("keep-alive", "timeout=99, max=7")
            .header("proxy-connection", "keep-alive")
            .header("x-kept", "1")
            .body(Body::from("{\"hop\":true}"))
            .unwrap(),
        (_, "token") => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::from(
                serde_json::json!({
                    "access_token": OAUTH_ACCESS_TOKEN,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                })
                .to_string(),
            ))
            .unwrap(),
        (_, "redirect") => Response::builder()
            .status(StatusCode::FOUND)
            .header(
                header::LOCATION,
                HeaderValue::from_str(&format!("http://{}/landing", shared.addr)).unwrap(),
            )
            .body(Body::from("moved"))
            .unwrap(),
        (_, "download") => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(download_body()))
            .unwrap(),
        _ => json_echo(&received),
    }
}

fn json_echo(received: &Received) -> Response {
    let body = serde_json::json!({
        "method": received.method,
        "target": received.target,
        "body_len": received.body_len,
        "body_sha256": received.body_sha256,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-upstream", "fake")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A bare HTTP/1.1 server that answers every request with [`download_body`] in
/// `Transfer-Encoding: chunked`, 64 KiB per chunk, written as it goes (the axum server above
/// sends a Content-Length body). Returns its address; the task ends with the runtime.
pub async fn start_chunked_download_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&byte[..n]),
                    }
                }
                let start = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                if stream.write_all(start).await.is_err() {
                    return;
                }
                let body = download_body();
                for chunk in body.chunks(64 * 1024) {
                    let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
                    frame.extend_from_slice(chunk);
                    frame.extend_from_slice(b"\r\n");
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}
