//! Routing of the proxy listener and the path rules of SPEC §4 step 5, on the raw request
//! target. Checks decode percent-escapes (once, and once more to catch double encoding) but
//! nothing decoded is ever forwarded: what passes goes upstream byte for byte.

/// What the proxy listener was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Discovery,
    /// The MCP endpoint (SPEC §4a).
    Mcp,
    Gateway {
        slug: &'a str,
        /// Everything after `/gateway/{slug}`: empty or starting with `/`, still encoded.
        rest: &'a str,
        /// The raw query string without `?`, if any.
        query: Option<&'a str>,
    },
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid path")]
pub struct InvalidPath;

/// Classify an origin-form target (`/path?query`). Absolute-form targets are reduced to origin
/// form by [`origin_form`] first.
pub fn classify(target: &str) -> Route<'_> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    match path {
        "/health" => return Route::Health,
        "/discovery" | "/bootstrap" => return Route::Discovery,
        "/mcp" => return Route::Mcp,
        _ => {}
    }
    let Some(after) = path.strip_prefix("/gateway/") else {
        return Route::NotFound;
    };
    let (slug, rest) = match after.find('/') {
        Some(at) => after.split_at(at),
        None => (after, ""),
    };
    if slug.is_empty() {
        return Route::NotFound;
    }
    Route::Gateway { slug, rest, query }
}

/// The origin-form part of a request target. An absolute-form target (`http://host/path`) is
/// accepted only when its authority is `host` (the request's `Host` header); anything else is
/// an invalid path, so the proxy can never be used to reach another authority.
pub fn origin_form<'a>(target: &'a [u8], host: Option<&str>) -> Result<&'a str, InvalidPath> {
    let target = std::str::from_utf8(target).map_err(|_| InvalidPath)?;
    if target.starts_with('/') {
        return Ok(target);
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .ok_or(InvalidPath)?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    match host {
        Some(host) if host.eq_ignore_ascii_case(authority) && path.starts_with('/') => Ok(path),
        _ => Err(InvalidPath),
    }
}

/// Check the part of the path after the slug (SPEC §4 step 5).
pub fn check_rest(rest: &str) -> Result<(), InvalidPath> {
    if rest.is_empty() {
        return Ok(());
    }
    let segments = rest.strip_prefix('/').ok_or(InvalidPath)?;
    let count = segments.split('/').count();
    for (index, segment) in segments.split('/').enumerate() {
        let last = index + 1 == count;
        // One trailing slash is kept; an empty segment anywhere else is refused.
        if segment.is_empty() && !(last && index > 0 || count == 1) {
            return Err(InvalidPath);
        }
        check_segment(segment.as_bytes())?;
    }
    Ok(())
}

fn check_segment(raw: &[u8]) -> Result<(), InvalidPath> {
    if raw.iter().any(|&b| b == b'\\' || b.is_ascii_control()) {
        return Err(InvalidPath);
    }
    let once = percent_decode(raw);
    if forbidden_decoded(&once) {
        return Err(InvalidPath);
    }
    if once.contains(&b'%') {
        let twice = percent_decode(&once);
        if forbidden_decoded(&twice) {
            return Err(InvalidPath);
        }
    }
    Ok(())
}

/// A decoded segment may not be a dot segment nor smuggle a separator or a control byte.
fn forbidden_decoded(decoded: &[u8]) -> bool {
    decoded == b"."
        || decoded == b".."
        || decoded
            .iter()
            .any(|&b| b == b'/' || b == b'\\' || b.is_ascii_control())
}

fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && let (Some(high), Some(low)) =
                (raw.get(i + 1).and_then(hex), raw.get(i + 2).and_then(hex))
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

fn hex(byte: &u8) -> Option<u8> {
    (*byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The path and query sent upstream: the base URL's path joined with the raw remainder, the
/// raw query kept, and an extra `name=value` pair appended when given (already encoded).
pub fn upstream_target(
    base_path: &str,
    rest: &str,
    query: Option<&str>,
    extra_query: Option<&str>,
) -> String {
    let base = base_path.trim_end_matches('/');
    let mut target =
        String::with_capacity(base.len() + rest.len() + 1 + query.map_or(0, str::len) + 32);
    target.push_str(base);
    target.push_str(rest);
    if target.is_empty() || (rest.is_empty() && base_path.ends_with('/')) {
        target.push('/');
    }
    let query = query.filter(|q| !q.is_empty());
    match (query, extra_query) {
        (Some(q), Some(extra)) => {
            target.push('?');
            target.push_str(q);
            target.push('&');
            target.push_str(extra);
        }
        (Some(q), None) => {
            target.push('?');
            target.push_str(q);
        }
        (None, Some(extra)) => {
            target.push('?');
            target.push_str(extra);
        }
        (None, None) => {}
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(classify("/health"), Route::Health);
        assert_eq!(classify("/discovery?x"), Route::Discovery);
        assert_eq!(classify("/bootstrap"), Route::Discovery);
        assert_eq!(classify("/"), Route::NotFound);
        assert_eq!(classify("/gateway/"), Route::NotFound);
        assert_eq!(classify("/gatewayx/a"), Route::NotFound);
        assert_eq!(
            classify("/gateway/gh/repos/x?per_page=1"),
            Route::Gateway {
                slug: "gh",
                rest: "/repos/x",
                query: Some("per_page=1")
            }
        );
        assert_eq!(
            classify("/gateway/gh"),
            Route::Gateway {
                slug: "gh",
                rest: "",
                query: None
            }
        );
    }

    #[test]
    fn path_rules() {
        for good in [
            "",
            "/",
            "/a",
            "/a/b",
            "/repos/",
            "/a%20b/c",
            "/%7Euser",
            "/a.b/..c/...",
            "/a%25",
        ] {
            assert_eq!(check_rest(good), Ok(()), "{good}");
        }
        for bad in [
            "/..",
            "/../secret",
            "/./a",
            "/a/.",
            "/%2e%2e/a",
            "/%2E%2e/a",
            "/%2e/a",
            "/%252e%252e/a",
            "/a%2fb",
            "/a%2Fb",
            "/a%252fb",
            "/a%5cb",
            "/a%255cb",
            "/a\\b",
            "/a%00b",
            "/a%0ab",
            "/a%7f",
            "/a\u{1}b",
            "/a//b",
            "//a",
            "x",
        ] {
            assert_eq!(check_rest(bad), Err(InvalidPath), "{bad}");
        }
    }

    #[test]
    fn absolute_form_only_for_our_authority() {
        assert_eq!(origin_form(b"/a?b", Some("gw:8080")), Ok("/a?b"));
        assert_eq!(
            origin_form(b"http://gw:8080/gateway/x", Some("gw:8080")),
            Ok("/gateway/x")
        );
        assert_eq!(
            origin_form(b"http://evil.example/gateway/x", Some("gw:8080")),
            Err(InvalidPath)
        );
        assert_eq!(
            origin_form(b"http://evil.example/gateway/x", None),
            Err(InvalidPath)
        );
        assert_eq!(origin_form(b"*", Some("gw")), Err(InvalidPath));
        assert_eq!(origin_form(b"/\xff", None), Err(InvalidPath));
    }

    #[test]
    fn upstream_targets_join_byte_for_byte() {
        assert_eq!(
            upstream_target("/base", "/a%20b/c", Some("q=1%2F2&x=%2e"), None),
            "/base/a%20b/c?q=1%2F2&x=%2e"
        );
        assert_eq!(
            upstream_target("/base/", "/repos/", None, None),
            "/base/repos/"
        );
        assert_eq!(upstream_target("/", "", None, None), "/");
        assert_eq!(upstream_target("/base", "", None, None), "/base");
        assert_eq!(upstream_target("/base/", "", None, None), "/base/");
        assert_eq!(
            upstream_target("/", "/x", Some(""), Some("key=v")),
            "/x?key=v"
        );
        assert_eq!(
            upstream_target("/v1", "/x", Some("a=1"), Some("key=v%20w")),
            "/v1/x?a=1&key=v%20w"
        );
    }
}
