//! The Python webhook receiver of `tests/support/webhook-receiver/receiver.py` as a child
//! process on loopback: it verifies signatures independently and records what it received.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::TestApp;
use super::agent::until;

pub struct Receiver {
    child: Child,
    port: u16,
    http: reqwest::Client,
}

impl Receiver {
    pub async fn start() -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/webhook-receiver/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the webhook receiver");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(20), line)
            .await
            .expect("the receiver gets ready within 20 s")
            .unwrap()
            .unwrap();
        let ready: Value = serde_json::from_str(&line).expect("the receiver's ready line");
        Self {
            child,
            port: u16::try_from(ready["port"].as_u64().unwrap()).unwrap(),
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn control(&self, what: &str, body: Value) {
        let reply = self
            .http
            .post(self.url(&format!("/_control/{what}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "receiver control {what}");
    }

    /// The secret the receiver verifies `path`'s deliveries with.
    pub async fn set_secret(&self, path: &str, secret: &str) {
        self.control("path", json!({"path": path, "secret": secret}))
            .await;
    }

    /// Answer the next `count` deliveries to `path` with `status`.
    pub async fn fail_next(&self, path: &str, count: u32, status: u16) {
        self.control(
            "fail",
            json!({"path": path, "count": count, "status": status}),
        )
        .await;
    }

    pub async fn redirect(&self, path: &str, location: &str) {
        self.control("redirect", json!({"path": path, "location": location}))
            .await;
    }

    /// Wait `seconds` before answering deliveries to `path`.
    pub async fn delay(&self, path: &str, seconds: f64) {
        self.control("delay", json!({"path": path, "seconds": seconds}))
            .await;
    }

    /// The most deliveries to `path` the receiver was handling at once.
    pub async fn max_in_flight(&self, path: &str) -> u64 {
        let stats: Value = self
            .http
            .get(self.url("/_control/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats[path].as_u64().unwrap_or(0)
    }

    /// Everything received so far, in order.
    pub async fn received(&self) -> Vec<Value> {
        self.http
            .get(self.url("/_control/received"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What arrived at `path`, waiting (at most `limit`) until `done` accepts it.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let (ok, received) = until(
            limit,
            || async {
                self.received()
                    .await
                    .into_iter()
                    .filter(|r| r["path"] == path)
                    .collect::<Vec<_>>()
            },
            |r| done(r),
        )
        .await;
        assert!(
            ok,
            "the receiver did not get what was expected at {path}: {received:#?}"
        );
        received
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Closing stdin ends it; kill in case it hangs.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Create an endpoint at `receiver`'s `path` for `events` through the admin API and give the
/// receiver its secret; returns (endpoint id, secret).
pub async fn subscribe(
    app: &TestApp,
    receiver: &Receiver,
    path: &str,
    events: &[&str],
) -> (uuid::Uuid, String) {
    let reply = app
        .api()
        .post(
            "/api/webhooks",
            json!({"url": receiver.url(path), "events": events, "description": "test"}),
        )
        .await;
    let body = reply.expect(201).clone();
    let secret = body["secret"].as_str().unwrap().to_owned();
    receiver.set_secret(path, &secret).await;
    (body["id"].as_str().unwrap().parse().unwrap(), secret)
}

/// The delivery log of an endpoint, waiting until `done` accepts it.
pub async fn wait_for_deliveries(
    app: &TestApp,
    endpoint: uuid::Uuid,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("/api/webhooks/{endpoint}/deliveries");
    let (ok, deliveries) = until(
        limit,
        || async {
            let reply = app.api().get(&path).await;
            reply.expect(200)["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        },
        |d| done(d),
    )
    .await;
    assert!(ok, "deliveries not as expected: {deliveries:#?}");
    deliveries
}
