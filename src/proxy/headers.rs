//! Header hygiene both ways (SPEC §4 step 7).
//!
//! Both directions walk the message's own headers once and remove what matches, instead of
//! looking up every name on a fixed list: no header name is parsed or copied into a `String`.

use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};

use crate::access::{Injection, TargetEntry};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their non-standard relatives.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Headers an agent may not pass through: its own credential and forwarding claims.
fn is_agent_only(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "forwarded" | "x-real-ip" | "host" | crate::guard::APPROVAL_HEADER
    ) || name.as_str().starts_with("x-forwarded-")
}

/// The names the message's `Connection` header lists: hop-by-hop for this message. Read once
/// per message (it was once per header); usually empty, which allocates nothing.
fn connection_listed(headers: &http::HeaderMap) -> Vec<&str> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|listed| !listed.is_empty())
        .collect()
}

fn is_listed(listed: &[&str], name: &HeaderName) -> bool {
    listed
        .iter()
        .any(|listed| listed.eq_ignore_ascii_case(name.as_str()))
}

/// Most request headers accepted (nginx accepts ~100 in its default buffers).
pub const MAX_REQUEST_HEADERS: usize = 100;
/// Longest single header line (name and value) accepted; nginx's default buffer is 8 KiB.
pub const MAX_HEADER_LINE_BYTES: usize = 16 * 1024;
/// Largest request head (request target and every header) accepted.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// Whether the agent's request head is over the limits above (Pingora itself reads up to
/// 1 MiB and 256 headers, which upstream APIs commonly refuse or choke on).
pub fn head_too_large(request: &RequestHeader) -> bool {
    if request.headers.len() > MAX_REQUEST_HEADERS {
        return true;
    }
    let mut total = request.raw_path().len();
    for (name, value) in &request.headers {
        let line = name.as_str().len() + value.len();
        if line > MAX_HEADER_LINE_BYTES {
            return true;
        }
        total += line;
    }
    total > MAX_REQUEST_HEAD_BYTES
}

/// Rewrite the copy of the agent's request that goes upstream.
pub fn rewrite_request(
    request: &mut RequestHeader,
    target: &TargetEntry,
    bearer: Option<&str>,
) -> pingora::Result<()> {
    let managed = target.target.is_managed();
    let listed = connection_listed(&request.headers);
    let remove: Vec<HeaderName> = request
        .headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name)
                || is_agent_only(name)
                || (managed && *name == http::header::COOKIE)
                || is_listed(&listed, name)
        })
        .cloned()
        .collect();
    drop(listed);
    for name in &remove {
        // `HeaderMap::remove` drops every value under the name.
        request.remove_header(name);
    }
    let Some(host) = &target.host_header else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "the target's host is not a valid Host header",
        ));
    };
    request.insert_header(http::header::HOST, host.clone())?;
    if let Injection::Headers(headers) = &target.injection {
        for (name, value) in headers {
            request.insert_header(name.clone(), value.as_str())?;
        }
    }
    if let Some(token) = bearer {
        request.insert_header(http::header::AUTHORIZATION, format!("Bearer {token}"))?;
    }
    Ok(())
}

/// Strip hop-by-hop headers and any header whose value contains one of `secrets` (the injected
/// credential) or the injected access token `bearer`.
pub fn rewrite_response(response: &mut ResponseHeader, secrets: &[String], bearer: Option<&str>) {
    let reveals = |value: &[u8]| {
        secrets
            .iter()
            .map(String::as_str)
            .chain(bearer)
            // A value shorter than the secret cannot hold it: most response headers are
            // skipped without building a searcher.
            .filter(|secret| !secret.is_empty() && secret.len() <= value.len())
            .any(|secret| memchr::memmem::find(value, secret.as_bytes()).is_some())
    };
    let listed = connection_listed(&response.headers);
    let mut remove: Vec<HeaderName> = Vec::new();
    for (name, value) in response.headers.iter() {
        let strip = is_hop_by_hop(name) || is_listed(&listed, name) || reveals(value.as_bytes());
        if strip && !remove.contains(name) {
            remove.push(name.clone());
        }
    }
    drop(listed);
    for name in &remove {
        response.remove_header(name);
    }
}
