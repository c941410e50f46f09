//! Reading a request body whole before anything goes upstream: `/mcp` (the SDK takes a whole
//! body) and guarded requests (hashed and bound to an approval).

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;

/// The whole request body, or `None` when it is larger than `limit` (the rest is not read).
pub async fn read_whole(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Read a body that must still go upstream: Pingora keeps what it read in its retry buffer
/// (up to 64 KiB) and replays it to the upstream, so `limit` must stay within that.
pub async fn read_for_upstream(session: &mut Session, limit: usize) -> Result<Option<Bytes>> {
    session.as_mut().enable_retry_buffering();
    read_whole(session, limit).await
}
