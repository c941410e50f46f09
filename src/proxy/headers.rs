//! Header hygiene both ways (SPEC §4 step 7).

use pingora::http::{RequestHeader, ResponseHeader};

use crate::access::{Injection, TargetEntry};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their non-standard relatives.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Headers an agent may not pass through: its own credential and forwarding claims.
const AGENT_ONLY: [&str; 4] = ["authorization", "forwarded", "x-real-ip", "host"];

/// Names listed in `Connection` (which are hop-by-hop for this message).
fn connection_listed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Rewrite the copy of the agent's request that goes upstream.
pub fn rewrite_request(
    request: &mut RequestHeader,
    target: &TargetEntry,
    host: &str,
    bearer: Option<&str>,
) -> pingora::Result<()> {
    let mut remove: Vec<String> = connection_listed(&request.headers);
    remove.extend(HOP_BY_HOP.iter().map(|s| (*s).to_owned()));
    remove.extend(AGENT_ONLY.iter().map(|s| (*s).to_owned()));
    remove.extend(
        request
            .headers
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("x-forwarded-"))
            .map(str::to_owned),
    );
    if target.target.is_managed() {
        remove.push("cookie".to_owned());
    }
    for name in &remove {
        while request.remove_header(name.as_str()).is_some() {}
    }
    request.insert_header("host", host)?;
    if let Injection::Headers(headers) = &target.injection {
        for (name, value) in headers {
            request.insert_header(name.clone(), value.as_str())?;
        }
    }
    if let Some(token) = bearer {
        request.insert_header("authorization", format!("Bearer {token}"))?;
    }
    Ok(())
}

/// Strip hop-by-hop headers and any header that would reveal the injected credential.
pub fn rewrite_response(response: &mut ResponseHeader, secrets: &[String]) {
    let mut remove: Vec<String> = connection_listed(&response.headers);
    remove.extend(HOP_BY_HOP.iter().map(|s| (*s).to_owned()));
    if !secrets.is_empty() {
        for (name, value) in response.headers.iter() {
            let value = String::from_utf8_lossy(value.as_bytes());
            if secrets.iter().any(|secret| value.contains(secret.as_str())) {
                remove.push(name.as_str().to_owned());
            }
        }
    }
    for name in &remove {
        while response.remove_header(name.as_str()).is_some() {}
    }
}
