//! Slow and oversized clients on the proxy listener (issue: hardening, item 1), over raw
//! sockets on loopback. Every wait is bounded: a connection the server should have closed
//! fails the test after a few seconds instead of hanging it.
//!
//! The deadlines are set to 1 s here; the defaults (15 s head, 60 s keep-alive idle, 60 s body
//! stall) are the same code with other numbers.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::agent::metric;
use crate::support::upstream::{DOWNLOAD_LEN, FakeUpstream};
use crate::support::{TestApp, TestDb};

const LIMIT: Duration = Duration::from_secs(1);
/// How long a test waits for the server to close a connection it must close.
const CLOSE_WITHIN: Duration = Duration::from_secs(6);

async fn app() -> TestApp {
    let db = TestDb::new().await;
    let admin = gatehouse::domain::tokens::AdminToken::generate();
    let key = crate::support::app::rand_key();
    let mut config = TestApp::config(&db, &admin, key);
    config.proxy.header_read_timeout = LIMIT;
    config.proxy.keepalive_timeout = LIMIT;
    config.proxy.body_read_timeout = LIMIT;
    TestApp::spawn_with(db, admin, key, config).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.running().proxy_addr).await.unwrap()
}

/// Read until the server closes the connection (EOF or reset); everything it sent. Fails the
/// test if the connection is still open after `CLOSE_WITHIN`.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open for {CLOSE_WITHIN:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// One whole response with a `Content-Length` body, as text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        received.extend_from_slice(&buf[..n]);
    }
}

async fn timeouts(app: &TestApp, phase: &str) -> f64 {
    let text = app.metrics_text().await;
    metric(
        &text,
        "gatehouse_client_timeouts_total",
        &[("phase", phase)],
    )
    .unwrap_or(0.0)
}

/// Write `bytes` one at a time, `gap` apart, until the server closes the connection or they
/// run out; whether the server closed it.
async fn drip(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> bool {
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        tokio::time::sleep(gap).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_sent_one_byte_at_a_time_is_cut_off() {
    let app = app().await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    // 40 bytes at 100 ms: 4 s of head, four times the limit.
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567\r\n\r\n";
    let _ = drip(&mut stream, head, Duration::from_millis(100)).await;
    let received = read_until_closed(&mut stream).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(4_500),
        "cut off near the 1 s limit, not after the whole head: {elapsed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "the slow request was not served: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(timeouts(&app, "header").await, 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = app().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let received = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "kept alive for the idle limit first: {:?}",
        started.elapsed()
    );
    assert_eq!(timeouts(&app, "keepalive").await, 1.0);
    // Requests sent within the limit on a kept-alive connection are served.
    let mut stream = connect(&app).await;
    for _ in 0..3 {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_is_cut_off_but_a_slow_steady_one_goes_through() {
    let app = app().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("uploads", &upstream.url("/base"), None).await;
    let head = |length: usize| {
        format!(
            "POST /gateway/uploads/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {length}\r\n\r\n",
            agent.token
        )
    };

    // 10 of 1000 bytes, then nothing.
    let mut stream = connect(&app).await;
    stream.write_all(head(1000).as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 10]).await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut stream).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(timeouts(&app, "body").await, 1.0);

    // 8 chunks, 400 ms apart: 2.8 s in all, but never a gap of 1 s.
    let mut stream = connect(&app).await;
    stream.write_all(head(8 * 16).as_bytes()).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(&[b'y'; 16]).await.unwrap();
    }
    let text = read_response(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(upstream.last().body_len, 128);
    assert_eq!(timeouts(&app, "body").await, 1.0, "no second timeout");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_download_is_not_cut_by_the_client_deadlines() {
    let app = app().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("files", &upstream.url("/base"), None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            format!(
                "GET /gateway/files/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Connection: close\r\n\r\n",
                agent.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // A reader slower than every limit: 1.5 s before reading anything.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert_eq!(received.len() - head_end - 4, DOWNLOAD_LEN);
    // (The set-up's pooled HTTP client may idle past the keep-alive limit meanwhile: that
    // connection, not this one, is what a keepalive count would be.)
    for phase in ["header", "body"] {
        assert_eq!(timeouts(&app, phase).await, 0.0, "{phase}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_heads_get_431_and_a_closed_connection() {
    let app = app().await;
    let long_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for request in [long_header, many] {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let received = read_until_closed(&mut stream).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 431"),
            "431 for a {} byte head: {text}",
            request.len()
        );
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            json!({"error": "request header fields too large"})
        );
    }
    // A head within the limits is served as before.
    let reply = app
        .raw(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fine: yes\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(reply.status, 200);
    app.stop().await;
}
