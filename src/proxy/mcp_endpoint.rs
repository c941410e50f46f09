//! `/mcp` on the proxy listener: once steps 1–2 passed, the agent's HTTP request is handed to
//! the SDK's Streamable HTTP service in process (an `http::Request` built from Pingora's
//! session, the body read whole up to 10 MiB) and the SDK's answer is written back on the
//! session. No second listener and no loopback hop.

use http_body_util::{BodyExt as _, Full};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::api_error::ApiError;
use crate::mcp::{MAX_REQUEST_BODY_BYTES, McpCaller, McpHttpService};

/// Serve one `/mcp` request. `Ok(Err(_))` is a refusal for the caller to write (413).
pub async fn serve(
    session: &mut Session,
    service: &McpHttpService,
    caller: McpCaller,
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
    let header = session.req_header();
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = header.method.clone();
    *request.uri_mut() = header.uri.clone();
    *request.headers_mut() = header.headers.clone();
    request.extensions_mut().insert(caller);

    let (parts, mut body) = service.handle(request).await.into_parts();
    let mut response = ResponseHeader::build(parts.status, Some(parts.headers.len() + 2))?;
    for (name, value) in &parts.headers {
        response.append_header(name.clone(), value.clone())?;
    }
    match http_body::Body::size_hint(&body).exact() {
        Some(length) => response.insert_header(http::header::CONTENT_LENGTH, length.to_string())?,
        // An event stream (the SDK streams when a handler sends notifications first).
        None => response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?,
    }
    response.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    while let Some(frame) = body.frame().await {
        // The SDK's body error type is `Infallible`.
        let Ok(frame) = frame;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            session.write_response_body(Some(data), false).await?;
        }
    }
    session.write_response_body(None, true).await?;
    Ok(Ok(()))
}
