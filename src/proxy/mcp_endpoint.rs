//! `/mcp` on the proxy listener: once steps 1–2 passed, the agent's HTTP request is handed to
//! the SDK's Streamable HTTP service in process (an `http::Request` built from Pingora's
//! session, the body read whole up to 10 MiB) and the SDK's answer is written back on the
//! session. No second listener and no loopback hop.
//!
//! Around the SDK, the elicitation relay (`mcp::elicitation`): an `api_request` a guard rule
//! held, from a client that can be asked, is answered as an event stream — the question
//! first, then, once the person answered (through any replica) or the wait ran out, the
//! tool's result.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::api_error::ApiError;
use crate::domain::guard::{ApprovalStatus, Decider};
use crate::guard::Approvals;
use crate::mcp::elicitation::{self, Held, Inbound};
use crate::mcp::{MAX_REQUEST_BODY_BYTES, McpCaller, McpHttpService};

/// How often a waiting elicitation looks at its approval's row.
const DECISION_POLL: Duration = Duration::from_millis(200);

/// A comment line that keeps an idle event stream open through proxies.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// What the relay needs: where decisions are recorded, and how long a call may wait for one
/// (`guard.elicitation_wait`; zero never asks).
pub struct Elicitation<'a> {
    pub approvals: &'a Approvals,
    pub wait: Duration,
}

/// Serve one `/mcp` request. `Ok(Err(_))` is a refusal for the caller to write (413).
pub async fn serve(
    session: &mut Session,
    service: &McpHttpService,
    caller: McpCaller,
    elicit: &Elicitation<'_>,
) -> Result<Result<(), ApiError>> {
    let body = match super::request_body::read_whole(session, MAX_REQUEST_BODY_BYTES).await? {
        Some(body) => body,
        None => {
            // The rest of the body is not read: the connection cannot carry another request.
            session.set_keepalive(None);
            return Ok(Err(ApiError::PayloadTooLarge));
        }
    };
    // The body is in: no client deadline while the tool call runs and the answer is written.
    super::client_timeouts::enter(
        session.as_downstream().stream(),
        super::client_timeouts::Phase::Serving,
    );
    match elicitation::classify(&body) {
        Inbound::Answer {
            approval_id,
            decision,
        } => {
            // An error answer (the client could not ask) decides nothing: the wait runs out
            // and the agent gets the approval to have decided elsewhere.
            if let Some(decision) = decision {
                let by = format!("mcp-elicitation:{}", caller.caller.token.name);
                let decider = Decider::Elicitation {
                    token_id: caller.caller.token.id,
                };
                if let Err(error) = elicit
                    .approvals
                    .decide(approval_id, decision, &by, decider)
                    .await
                {
                    return Ok(Err(error.into()));
                }
            }
            write_accepted(session).await?;
        }
        Inbound::InitializeWithElicitation => {
            let response = service.handle(sdk_request(session, body, &caller)).await;
            let session_id = elicitation::session_id();
            write_streamed(session, response, Some(&session_id)).await?;
        }
        Inbound::ApiRequest(call) if !elicit.wait.is_zero() && can_be_asked(session) => {
            relay(session, service, caller, elicit, body, call).await?;
        }
        Inbound::ApiRequest(_) | Inbound::Other => {
            let response = service.handle(sdk_request(session, body, &caller)).await;
            write_streamed(session, response, None).await?;
        }
    }
    Ok(Ok(()))
}

/// The client said at `initialize` that it can be asked (its session id says so).
fn can_be_asked(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|id| id.starts_with(elicitation::SESSION_PREFIX))
}

fn sdk_request(session: &Session, body: Bytes, caller: &McpCaller) -> http::Request<Full<Bytes>> {
    let header = session.req_header();
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = header.method.clone();
    *request.uri_mut() = header.uri.clone();
    *request.headers_mut() = header.headers.clone();
    request.extensions_mut().insert(caller.clone());
    request
}

/// The SDK's answer, whole (a tool call's answer is one JSON message).
async fn collected(
    service: &McpHttpService,
    request: http::Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let (parts, body) = service.handle(request).await.into_parts();
    // The SDK's body error type is `Infallible`.
    let Ok(body) = body.collect().await;
    (parts, body.to_bytes())
}

/// An `api_request` from a client that can be asked: if the gateway held it for approval,
/// ask the person through the client and wait for the decision in the database.
async fn relay(
    session: &mut Session,
    service: &McpHttpService,
    caller: McpCaller,
    elicit: &Elicitation<'_>,
    body: Bytes,
    call: serde_json::Value,
) -> Result<()> {
    let (parts, answer) = collected(service, sdk_request(session, body, &caller)).await;
    let held = is_json(&parts)
        .then(|| elicitation::held(&answer))
        .flatten();
    let Some(held) = held else {
        return write_streamed(session, whole(parts, answer), None).await;
    };
    // Only an approval the person is asked about may be decided by the client's answer.
    let asked = elicit
        .approvals
        .mark_elicited(held.approval_id, caller.caller.token.id)
        .await;
    if !matches!(asked, Ok(true)) {
        return write_streamed(session, whole(parts, answer), None).await;
    }
    let mut header = ResponseHeader::build(200, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/event-stream")?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    let question = elicitation::request(&call, &held, &caller.caller.token.name);
    write_event(session, question.to_string().as_bytes()).await?;

    let final_answer = if wait_for_decision(session, elicit, &held).await? {
        // Decided: the same call again, naming the approval. The gateway passes it once if it
        // was approved, or answers `approval denied` (and audits it) if not.
        let again = elicitation::with_approval(call, held.approval_id);
        let body = Bytes::from(again.to_string());
        let (parts, answer) = collected(service, sdk_request(session, body, &caller)).await;
        if is_json(&parts) {
            elicitation::sse_event(&answer)
        } else {
            answer.to_vec()
        }
    } else {
        // No decision in time: the held result, whose approval can still be decided on its
        // page and used with `approval_id`.
        elicitation::sse_event(&answer)
    };
    session
        .write_response_body(Some(Bytes::from(final_answer)), false)
        .await?;
    session.write_response_body(None, true).await
}

/// Poll the approval until a person decided it (`true`) or the wait ran out (`false`).
async fn wait_for_decision(
    session: &mut Session,
    elicit: &Elicitation<'_>,
    held: &Held,
) -> Result<bool> {
    let deadline = Instant::now() + elicit.wait;
    let mut keepalive = Instant::now() + KEEPALIVE_EVERY;
    while Instant::now() < deadline {
        tokio::time::sleep(DECISION_POLL).await;
        match elicit.approvals.status(held.approval_id).await {
            Ok(ApprovalStatus::Pending) => {}
            Ok(_) => return Ok(true),
            // A database hiccup is not a decision: keep waiting until the deadline.
            Err(error) => tracing::warn!(%error, "could not read an approval's status"),
        }
        if Instant::now() >= keepalive {
            session
                .write_response_body(Some(Bytes::from_static(b": waiting\n\n")), false)
                .await?;
            keepalive = Instant::now() + KEEPALIVE_EVERY;
        }
    }
    Ok(false)
}

fn is_json(parts: &http::response::Parts) -> bool {
    parts.status == http::StatusCode::OK
        && parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
}

async fn write_event(session: &mut Session, message: &[u8]) -> Result<()> {
    let event = elicitation::sse_event(message);
    session
        .write_response_body(Some(Bytes::from(event)), false)
        .await
}

/// 202 with no body: how a server takes a client's JSON-RPC response.
async fn write_accepted(session: &mut Session) -> Result<()> {
    let mut header = ResponseHeader::build(202, Some(1))?;
    header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    session.write_response_header(Box::new(header), true).await
}

/// A collected answer, to write like any other.
fn whole(parts: http::response::Parts, body: Bytes) -> http::Response<Full<Bytes>> {
    http::Response::from_parts(parts, Full::new(body))
}

/// The SDK's answer as it comes (an event stream when a handler sends notifications first),
/// with `session_id` as `Mcp-Session-Id` when given.
async fn write_streamed(
    session: &mut Session,
    response: http::Response<
        impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Unpin,
    >,
    session_id: Option<&str>,
) -> Result<()> {
    let (parts, mut body) = response.into_parts();
    let mut response = ResponseHeader::build(parts.status, Some(parts.headers.len() + 3))?;
    for (name, value) in &parts.headers {
        response.append_header(name.clone(), value.clone())?;
    }
    if let Some(id) = session_id {
        response.insert_header("mcp-session-id", id)?;
    }
    match http_body::Body::size_hint(&body).exact() {
        Some(length) => response.insert_header(http::header::CONTENT_LENGTH, length.to_string())?,
        None => response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?,
    }
    response.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            session.write_response_body(Some(data), false).await?;
        }
    }
    session.write_response_body(None, true).await
}
