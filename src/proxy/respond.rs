//! Writing an answer on a Pingora session: always through here, never ad-hoc bytes.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::api_error::ApiError;

/// Write `body` as JSON with `status`, ending the response.
pub async fn json(session: &mut Session, status: u16, body: &serde_json::Value) -> Result<()> {
    write(session, status, body, false).await
}

/// Write an `ApiError` through the one table: its status, `{"error": …}`, and
/// `WWW-Authenticate: Bearer` on 401.
pub async fn error(session: &mut Session, error: &ApiError) -> Result<()> {
    let status = error.status().as_u16();
    if error.is_server_error() {
        tracing::warn!(error = %error, status, "proxy request failed");
    }
    write(
        session,
        status,
        &serde_json::json!({"error": error.public_message()}),
        status == 401,
    )
    .await
}

async fn write(
    session: &mut Session,
    status: u16,
    body: &serde_json::Value,
    challenge: bool,
) -> Result<()> {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    if challenge {
        header.insert_header("www-authenticate", "Bearer")?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
