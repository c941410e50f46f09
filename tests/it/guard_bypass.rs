//! Ways around a guard rule that must not work (SPEC §12 "no destructive request matching a
//! rule reaches an upstream without a person's decision"): a method-override header on a POST,
//! and encodings or case of the path.

use std::time::Duration;

use serde_json::json;

use crate::support::TestApp;
use crate::support::agent::within;
use crate::support::upstream::FakeUpstream;

async fn status_of(token: &str, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(json!(null)))
}

#[tokio::test]
async fn a_method_override_is_guarded_as_the_method_it_names() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/"), None).await;
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        let request = app
            .http
            .post(app.proxy_url("/gateway/api/repos/1"))
            .header(header, "delete");
        let (status, body) = status_of(&agent.token, request).await;
        assert_eq!(status, 403, "{header}: {body}");
        assert_eq!(
            body["error"],
            json!("approval required"),
            "{header}: {body}"
        );
    }
    assert_eq!(
        upstream.count(),
        0,
        "no overridden DELETE reached the upstream"
    );
    // Counted in the logging phase, which may run just after the answer reached us.
    let expected = r#"gatehouse_guard_actions_total{action="approval_required",target="api"} 3"#;
    let counted = within(Duration::from_secs(5), || async {
        let metrics = app
            .http
            .get(app.metrics_url("/metrics"))
            .send()
            .await
            .unwrap();
        metrics.text().await.unwrap().contains(expected)
    })
    .await;
    assert!(counted, "{expected}");
    // A plain POST is not held.
    let (status, _) = status_of(
        &agent.token,
        app.http.post(app.proxy_url("/gateway/api/repos/1")),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn encoded_or_upper_case_words_are_held() {
    let app = TestApp::spawn().await;
    let upstream = FakeUpstream::start().await;
    let agent = app.agent_for("api", &upstream.url("/"), None).await;
    for path in [
        "/v1/dele%74e",
        "/v1/dele%2574e",
        "/v1/DELETE",
        "/v1/Purge/x",
    ] {
        let request = app.http.post(app.proxy_url(&format!("/gateway/api{path}")));
        let (status, body) = status_of(&agent.token, request).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], json!("approval required"), "{path}: {body}");
    }
    assert_eq!(upstream.count(), 0);
}
