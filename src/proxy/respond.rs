//! Writing an answer on a Pingora session: always through here, never ad-hoc bytes.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::api_error::ApiError;

/// Write `body` as JSON with `status`, ending the response.
pub async fn json(session: &mut Session, status: u16, body: &serde_json::Value) -> Result<()> {
    send(session, ResponseHeader::build(status, Some(4))?, body).await
}

/// Write an `ApiError` through the one table: its status, `{"error": …}` (plus the account and
/// the action for connected-account problems), `WWW-Authenticate: Bearer` on 401 and
/// `Retry-After` on errors that pass. `mark` adds the refusal marker the MCP tools read
/// (`internal::REFUSAL_HEADER`).
pub async fn error(session: &mut Session, error: &ApiError, mark: bool) -> Result<()> {
    let status = error.status().as_u16();
    if error.is_server_error() {
        tracing::warn!(error = %error, status, "proxy request failed");
    }
    let body = error.body();
    let mut header = ResponseHeader::build(status, Some(6))?;
    if status == 401 {
        header.insert_header("www-authenticate", "Bearer")?;
    }
    if let Some(seconds) = error.retry_after() {
        header.insert_header("retry-after", seconds.to_string())?;
    }
    if mark {
        header.insert_header(super::internal::REFUSAL_HEADER, "1")?;
    }
    send(session, header, &body).await
}

async fn send(
    session: &mut Session,
    mut header: ResponseHeader,
    body: &serde_json::Value,
) -> Result<()> {
    let body = Bytes::from(body.to_string());
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
