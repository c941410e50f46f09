//! Writing an answer on a Pingora session: always through here, never ad-hoc bytes.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

/// Write `body` as JSON with `status`, ending the response.
pub async fn json(session: &mut Session, status: u16, body: &serde_json::Value) -> Result<()> {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(3))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
