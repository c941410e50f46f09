//! SPEC §9: no secret in a log line, even at trace level (Pingora's own logs included). The
//! real binary runs as a child process; its whole stdout and stderr are searched for canaries.

use std::time::Duration;

use gatehouse::domain::tokens::AdminToken;

use crate::support::child::{Canaries, LoggedServer, assert_not_logged, strip_ansi};
use crate::support::upstream::FakeUpstream;

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_logs_at_trace_level() {
    let admin_token = AdminToken::generate();
    let upstream = FakeUpstream::start().await;
    let server = LoggedServer::start(&admin_token, &[]).await;

    let canaries = Canaries::generate();
    let Canaries {
        credential,
        query_canary,
        header_canary,
        unknown_token,
    } = &canaries;

    let (token, token_id) = server
        .logged_agent(&upstream.url("/base"), credential, "logged agent")
        .await;

    // A second target where nothing listens: upstream failures are logged (by Pingora too).
    let closed = crate::support::upstream::closed_port();
    let gone_id = server
        .make_target(
            "Gone",
            "gone",
            &format!("http://{closed}/x"),
            "query_param",
            &format!("key:{credential}"),
        )
        .await;
    server.grant(&token_id, &gone_id).await;

    let http = &server.http;
    let mut ok = false;
    for _ in 0..40 {
        let response = http
            .get(server.proxy_url(&format!("/gateway/logged/items?secret={query_canary}")))
            .bearer_auth(&token)
            .header("x-secret-header", header_canary)
            .send()
            .await
            .unwrap();
        if response.status().as_u16() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the proxied request succeeded within 2 s");
    assert_eq!(
        upstream.last().header("authorization"),
        Some(format!("Bearer {credential}"))
    );
    // More traffic: a credential-echoing response, a refused path, a 404, discovery, and an
    // unknown token (which must not be logged either).
    for (path, bearer) in [
        (
            format!("/gateway/logged/echo-auth?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/logged/a%2fb?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/nope/x?secret={query_canary}"),
            token.as_str(),
        ),
        ("/discovery".to_owned(), token.as_str()),
        (
            format!("/gateway/gone/x?secret={query_canary}"),
            token.as_str(),
        ),
        (
            format!("/gateway/logged/x?secret={query_canary}"),
            unknown_token.expose(),
        ),
    ] {
        let response = http
            .post(server.proxy_url(&path))
            .bearer_auth(bearer)
            .header("x-secret-header", header_canary)
            .header("cookie", format!("session={header_canary}"))
            .body(format!("body-{header_canary}"))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await;
    }
    // Let the audit writer run once.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (exit, text) = server.stop();
    assert!(exit.success(), "SIGTERM exits 0, got {exit:?}");
    let plain = strip_ansi(&text);
    assert!(
        plain.contains("gatehouse is serving"),
        "served with GATEHOUSE__LOG__LEVEL=trace"
    );
    assert_not_logged(&text, &canaries.secrets(&token, &admin_token));
}
