//! HTTPS upstreams on 127.0.0.1 with certificates made in the test: [`TestCa`] is a private CA
//! that issues leaf certificates for chosen names, and [`TlsUpstream`] serves HTTP/1.1 over
//! rustls with one of them. Every request is answered `200` with a small JSON body; connections
//! are kept alive unless the path ends with `/close`. It records each request (with the
//! connection it came on) and counts accepted TCP connections, finished handshakes and resumed
//! TLS sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, HandshakeKind, ServerConfig};

/// A private certificate authority, generated per test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// The CA certificate as PEM, what `upstream.extra_ca_file` holds.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key as PEM (a file holding no certificate).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> ServerIdentity {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test upstream");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerIdentity {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

/// What a TLS server presents: its certificate chain and private key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// One request as the TLS upstream received it.
#[derive(Debug, Clone)]
pub struct TlsReceived {
    /// The n-th accepted connection it came on, from 1.
    pub connection: usize,
    pub method: String,
    pub target: String,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
}

impl TlsReceived {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    handshakes: AtomicUsize,
    resumed: AtomicUsize,
    received: Mutex<Vec<TlsReceived>>,
}

pub struct TlsUpstream {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    /// Aborting it drops the set of connection tasks, which ends them too.
    task: tokio::task::JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(identity: ServerIdentity) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, acceptor, counters.clone()));
        Self {
            addr,
            counters,
            task,
        }
    }

    /// `https://{host}:{port}{path}`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes that completed.
    pub fn handshakes(&self) -> usize {
        self.counters.handshakes.load(Ordering::SeqCst)
    }

    /// Completed handshakes that resumed an earlier TLS session.
    pub fn resumed(&self) -> usize {
        self.counters.resumed.load(Ordering::SeqCst)
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<TlsReceived> {
        self.counters.received.lock().clone()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let connection = counters.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        let acceptor = acceptor.clone();
        let counters = counters.clone();
        connections.spawn(async move {
            // A client that refuses the certificate ends the handshake: nothing to serve.
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            counters.handshakes.fetch_add(1, Ordering::SeqCst);
            if tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                counters.resumed.fetch_add(1, Ordering::SeqCst);
            }
            serve(tls, connection, &counters).await;
        });
        // Reap the finished ones so the set does not grow with every connection.
        while connections.try_join_next().is_some() {}
    }
}

/// Request after request on one connection, until the client closes or asks to.
async fn serve<S>(mut stream: S, connection: usize, counters: &Counters)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buffer.len() > 64 * 1024 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        let received = TlsReceived {
            connection,
            method,
            target,
            headers,
        };
        // Bodies are read and dropped (the tests send none, or small ones).
        let body_len: usize = received
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + body_len);

        let close = received.target.ends_with("/close")
            || received
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = serde_json::json!({"tls": true, "target": received.target}).to_string();
        counters.received.lock().push(received);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: {}\r\n\r\n{body}",
            body.len(),
            if close { "close" } else { "keep-alive" },
        );
        if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
