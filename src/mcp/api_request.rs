//! The `api_request` tool: its input turned into one gateway request, and the gateway's answer
//! turned into the tool's output (SPEC §4a). The rules themselves (permission, path, headers,
//! credential, egress, audit) are not here: they run in the gateway pipeline.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use rmcp::schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::forward::{ForwardRequest, ForwardResponse};
use crate::domain::validation::ValidationError;
use crate::guard::APPROVAL_HEADER;

/// Bytes of a slug that may stand as they are in the `/gateway/{slug}` segment.
const SLUG_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-');

/// What a request-target cannot carry raw. `%` stays (the agent may have encoded already:
/// nothing is decoded or encoded twice), `?`, `&` and `=` stay (the path may carry a query),
/// and `\` stays so the path rules refuse it as they do on `/gateway`.
const PATH_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'^');

/// Headers the tool frames itself: the agent's values would contradict the body it sends
/// (and the approval is named by `approval_id`, once).
const FRAMING_HEADERS: [&str; 6] = [
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    APPROVAL_HEADER,
];

/// Input of `api_request`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct ApiRequestInput {
    /// The target's slug, as `discover` lists it.
    pub target: String,
    /// The HTTP method.
    pub method: ApiMethod,
    /// Path below the target's base URL, e.g. `/me/messages`; it may carry `?query`.
    pub path: String,
    /// Query parameters, encoded and appended to the path.
    #[serde(default)]
    pub query: Option<BTreeMap<String, String>>,
    /// Request headers. The gateway strips what it strips on `/gateway` (your own
    /// Authorization, forwarding and hop-by-hop headers) and injects the target's credential.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// A JSON value, sent as `application/json` unless `headers` names another Content-Type;
    /// a string is sent as it is.
    #[serde(default)]
    pub body: Option<Value>,
    /// A binary body, base64-encoded (instead of `body`).
    #[serde(default)]
    pub body_base64: Option<String>,
    /// The id of an approval a person gave for exactly this request (the `approval.id` of an
    /// earlier `approval required` result): the request then passes once.
    #[serde(default)]
    pub approval_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl ApiMethod {
    fn as_method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Head => Method::HEAD,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
            Self::Patch => Method::PATCH,
            Self::Delete => Method::DELETE,
            Self::Options => Method::OPTIONS,
        }
    }
}

/// Output of `api_request`: the answer of the upstream (or of the gateway, for a refusal).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
pub struct ApiRequestOutput {
    /// HTTP status.
    pub status: u16,
    /// Response headers; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Parsed JSON for a JSON response, text for a textual one, base64 otherwise.
    pub body: Value,
    /// `base64` when `body` is base64-encoded binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<String>,
    /// True when the body was longer than the server's limit and was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// The full length of the body in bytes, when it was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The gateway request for `input`, or the input field that is wrong.
pub fn forward_request(
    input: ApiRequestInput,
    authorization: HeaderValue,
    client_ip: std::net::IpAddr,
) -> Result<ForwardRequest, ValidationError> {
    let mut target = format!(
        "/gateway/{}",
        utf8_percent_encode(&input.target, SLUG_ESCAPES)
    );
    if !input.path.is_empty() && !input.path.starts_with('/') {
        target.push('/');
    }
    target.extend(utf8_percent_encode(&input.path, PATH_ESCAPES));
    if let Some(query) = input.query.filter(|q| !q.is_empty()) {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&query)
                .finish(),
        );
    }

    let mut headers = Vec::new();
    let mut has_content_type = false;
    for (name, value) in input.headers.unwrap_or_default() {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ValidationError::new("headers", format!("{name:?} is not a header name"))
        })?;
        if FRAMING_HEADERS.contains(&header_name.as_str()) {
            continue;
        }
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            ValidationError::new(format!("headers.{name}"), "not a valid header value")
        })?;
        has_content_type |= header_name == http::header::CONTENT_TYPE;
        headers.push((header_name, header_value));
    }

    if let Some(id) = input.approval_id.as_deref() {
        let value = HeaderValue::from_str(id.trim())
            .map_err(|_| ValidationError::new("approval_id", "not an approval id"))?;
        headers.push((HeaderName::from_static(APPROVAL_HEADER), value));
    }

    let body = match (input.body, input.body_base64) {
        (Some(body), Some(_)) if !body.is_null() => {
            return Err(ValidationError::new(
                "body_base64",
                "give body or body_base64, not both",
            ));
        }
        (_, Some(encoded)) => Bytes::from(
            BASE64
                .decode(encoded.as_bytes())
                .map_err(|_| ValidationError::new("body_base64", "not valid base64"))?,
        ),
        (Some(Value::String(text)), None) => Bytes::from(text),
        (Some(Value::Null) | None, None) => Bytes::new(),
        (Some(json), None) => {
            if !has_content_type {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
            }
            Bytes::from(json.to_string())
        }
    };
    Ok(ForwardRequest {
        authorization,
        client_ip,
        method: input.method.as_method(),
        target,
        headers,
        body,
    })
}

/// The tool output for what the gateway answered.
pub fn output(response: ForwardResponse) -> ApiRequestOutput {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &response.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let truncated = response.size > response.body.len() as u64;
    let kind = BodyKind::of(headers.get("content-type").map(String::as_str));
    let (body, body_encoding) = encode_body(&response.body, kind, truncated);
    ApiRequestOutput {
        status: response.status,
        headers,
        body,
        body_encoding,
        truncated: truncated.then_some(true),
        size: truncated.then_some(response.size),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Text,
    /// No Content-Type: text if it decodes as UTF-8, else binary.
    Unknown,
    Binary,
}

impl BodyKind {
    fn of(content_type: Option<&str>) -> Self {
        let Some(content_type) = content_type else {
            return Self::Unknown;
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else if essence.starts_with("text/")
            || essence.ends_with("+xml")
            || matches!(
                essence.as_str(),
                "application/xml"
                    | "application/javascript"
                    | "application/x-www-form-urlencoded"
                    | "application/x-ndjson"
                    | "application/yaml"
            )
        {
            Self::Text
        } else {
            Self::Binary
        }
    }
}

/// The body as JSON, text or base64, and its `body_encoding`.
fn encode_body(bytes: &[u8], kind: BodyKind, truncated: bool) -> (Value, Option<String>) {
    if kind == BodyKind::Json
        && !truncated
        && let Ok(json) = serde_json::from_slice::<Value>(bytes)
    {
        return (json, None);
    }
    if kind != BodyKind::Binary
        && let Some(text) = utf8_prefix(bytes, truncated)
    {
        return (Value::String(text.to_owned()), None);
    }
    (
        Value::String(BASE64.encode(bytes)),
        Some("base64".to_owned()),
    )
}

/// `bytes` as text; a cut body may end inside a character, which is then left out.
fn utf8_prefix(bytes: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text),
        // `error_len() == None`: the bytes end in the middle of a character.
        Err(error) if truncated && error.error_len().is_none() => {
            std::str::from_utf8(&bytes[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn input(json: Value) -> ApiRequestInput {
        serde_json::from_value(json).unwrap()
    }

    fn request(json: Value) -> Result<ForwardRequest, ValidationError> {
        forward_request(
            input(json),
            HeaderValue::from_static("Bearer sg_x"),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )
    }

    #[test]
    fn target_path_and_query_are_encoded_once() {
        let request = request(serde_json::json!({
            "target": "mail", "method": "GET", "path": "me/messages?$top=5",
            "query": {"q": "a b&c", "x": "ü"}
        }))
        .unwrap();
        assert_eq!(
            request.target,
            "/gateway/mail/me/messages?$top=5&q=a+b%26c&x=%C3%BC"
        );
        let request = request_path("/a b/%2F/ü#x");
        assert_eq!(request, "/gateway/t/a%20b/%2F/%C3%BC%23x");
        // A slug cannot smuggle a path or a query.
        let request = self::request(serde_json::json!({
            "target": "a/b?c", "method": "GET", "path": "/x"
        }))
        .unwrap();
        assert_eq!(request.target, "/gateway/a%2Fb%3Fc/x");
    }

    fn request_path(path: &str) -> String {
        request(serde_json::json!({"target": "t", "method": "GET", "path": path}))
            .unwrap()
            .target
    }

    #[test]
    fn bodies_json_text_binary_and_conflicts() {
        let json = request(serde_json::json!({
            "target": "t", "method": "POST", "path": "/", "body": {"a": 1}
        }))
        .unwrap();
        assert_eq!(&json.body[..], br#"{"a":1}"#);
        assert!(
            json.headers
                .iter()
                .any(|(n, v)| n == "content-type" && v == "application/json")
        );
        let text = request(serde_json::json!({
            "target": "t", "method": "POST", "path": "/", "body": "plain",
            "headers": {"Content-Type": "text/plain", "Content-Length": "99", "Authorization": "Bearer other"}
        }))
        .unwrap();
        assert_eq!(&text.body[..], b"plain");
        assert_eq!(text.headers.len(), 1, "framing and auth headers dropped");
        let binary = request(serde_json::json!({
            "target": "t", "method": "PUT", "path": "/", "body_base64": "AAEC/w=="
        }))
        .unwrap();
        assert_eq!(&binary.body[..], &[0, 1, 2, 255]);
        let both = request(serde_json::json!({
            "target": "t", "method": "PUT", "path": "/", "body": "x", "body_base64": "AA=="
        }));
        assert_eq!(both.unwrap_err().field, "body_base64");
        let bad = request(serde_json::json!({
            "target": "t", "method": "PUT", "path": "/", "body_base64": "***"
        }));
        assert_eq!(bad.unwrap_err().field, "body_base64");
        let bad_header = request(serde_json::json!({
            "target": "t", "method": "GET", "path": "/", "headers": {"bad name": "x"}
        }));
        assert_eq!(bad_header.unwrap_err().field, "headers");
    }

    #[test]
    fn unknown_methods_and_fields_are_refused() {
        assert!(
            serde_json::from_value::<ApiRequestInput>(
                serde_json::json!({"target": "t", "method": "TRACE", "path": "/"})
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<ApiRequestInput>(
                serde_json::json!({"target": "t", "method": "GET", "path": "/", "extra": 1})
            )
            .is_err()
        );
    }

    fn response(content_type: Option<&str>, body: &[u8], size: u64) -> ForwardResponse {
        let mut headers = http::HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        }
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        ForwardResponse {
            status: 200,
            headers,
            body: Bytes::copy_from_slice(body),
            size,
            refused: false,
        }
    }

    #[test]
    fn outputs_json_text_base64_and_truncation() {
        let json = output(response(
            Some("application/json; charset=utf-8"),
            br#"{"a":[1]}"#,
            9,
        ));
        assert_eq!(json.body, serde_json::json!({"a": [1]}));
        assert_eq!(json.headers["x-multi"], "a, b");
        assert_eq!(json.truncated, None);
        let text = output(response(Some("text/plain"), b"hello", 5));
        assert_eq!(text.body, "hello");
        let binary = output(response(Some("image/png"), &[0, 159, 146, 150], 4));
        assert_eq!(binary.body, "AJ+Slg==");
        assert_eq!(binary.body_encoding.as_deref(), Some("base64"));
        // A cut JSON body is not JSON any more: it comes back as text, marked truncated.
        let cut = output(response(Some("application/json"), br#"{"a":"#, 100));
        assert_eq!(cut.body, r#"{"a":"#);
        assert_eq!((cut.truncated, cut.size), (Some(true), Some(100)));
        // A cut inside a multi-byte character drops the partial character.
        let cut = output(response(Some("text/plain"), &"aü".as_bytes()[..2], 3));
        assert_eq!(cut.body, "a");
        // No content type: UTF-8 is text, anything else base64.
        assert_eq!(output(response(None, b"ok", 2)).body, "ok");
        assert_eq!(
            output(response(None, &[255, 0], 2))
                .body_encoding
                .as_deref(),
            Some("base64")
        );
    }
}
