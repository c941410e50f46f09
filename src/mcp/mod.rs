//! The agents' MCP endpoint (SPEC §4a) on the official SDK, `rmcp`: Streamable HTTP in its
//! stateless mode (no session ids, every POST answered with JSON), so any replica answers any
//! request. Two tools: `discover` (alias `bootstrap`) and `api_request`.
//!
//! This module never decides access: the proxy checks the token (SPEC §4 steps 1–2) on every
//! HTTP request before handing it here with a [`McpCaller`], and `api_request` runs through
//! the gateway pipeline behind [`Forwarder`].

mod api_request;
pub mod elicitation;
mod forward;
pub mod setup;

pub use forward::{ForwardError, ForwardRequest, ForwardResponse, Forwarder};

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use rmcp::handler::server::common::{schema_for_output, schema_for_type};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::access::{AccessControl, Caller, discovery};
use crate::api_error::ApiError;
use api_request::{ApiRequestInput, ApiRequestOutput};

/// The largest `/mcp` request body (SPEC §4a); larger → 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The revisions this server speaks, newest first; anything else is answered with the newest.
const SUPPORTED_VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2025_06_18];

const INSTRUCTIONS: &str = "Gatehouse gives you access to upstream APIs without holding their \
credentials. Call `discover` first: it lists the targets this token may use. Then call \
`api_request` with a target's slug, an HTTP method and a path below the target's base URL; \
Gatehouse adds the credential and returns the upstream's status, headers and body. Targets \
with an `integration` are managed: they reach one person's mailbox or calendar through \
Microsoft Graph or the Google APIs, on behalf of the account named there (`email`). A refusal \
by the gateway (no permission, read-only access, invalid path, an account that needs \
reconnecting) comes back as an error result with the status and the reason. A request a \
guard rule holds (e.g. a DELETE) comes back as `approval required` with an `approval` object: \
a person must approve it, at `approval.url` or in your client if it asks; then call \
`api_request` again with the same input plus `approval_id`. It passes once, unchanged.";

/// The rmcp HTTP service the proxy hands `/mcp` requests to.
pub type McpHttpService = StreamableHttpService<GatehouseTools, NeverSessionManager>;

/// Who is calling: set by the proxy on the request's extensions once steps 1–2 passed.
#[derive(Clone)]
pub struct McpCaller {
    pub caller: Caller,
    /// The agent's `Authorization` header value, for the gateway requests of `api_request`.
    pub authorization: http::HeaderValue,
    /// The agent's own address (the IP allowlist is checked against it).
    pub client_ip: IpAddr,
}

/// The MCP server: tools over the access snapshot and the gateway pipeline.
#[derive(Clone)]
pub struct GatehouseTools {
    inner: Arc<Inner>,
}

struct Inner {
    access: Arc<AccessControl>,
    forwarder: Arc<dyn Forwarder>,
    max_response_bytes: u64,
    tools: Vec<Tool>,
}

impl GatehouseTools {
    pub fn new(
        access: Arc<AccessControl>,
        forwarder: Arc<dyn Forwarder>,
        max_response_bytes: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                access,
                forwarder,
                max_response_bytes,
                tools: tool_list(),
            }),
        }
    }

    /// The SDK's Streamable HTTP service over these tools: stateless, JSON answers.
    pub fn into_http_service(self) -> McpHttpService {
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            // The SDK's Host check protects unauthenticated local servers from DNS rebinding;
            // every request here carries a bearer token checked before the SDK sees it, and
            // the public host name is the operator's to choose.
            .disable_allowed_hosts()
            .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES);
        StreamableHttpService::new(
            move || Ok(self.clone()),
            Arc::new(NeverSessionManager::default()),
            config,
        )
    }

    fn discover(&self, caller: &McpCaller) -> CallToolResult {
        let body = discovery::body(&self.inner.access.visible_targets(&caller.caller));
        CallToolResult::structured(body)
    }

    async fn api_request(
        &self,
        caller: &McpCaller,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, ErrorData> {
        let arguments = serde_json::Value::Object(arguments.unwrap_or_default());
        let input: ApiRequestInput = match serde_json::from_value(arguments) {
            Ok(input) => input,
            Err(error) => {
                let error =
                    crate::domain::validation::ValidationError::new("arguments", error.to_string());
                return Ok(refusal(&ApiError::from(error)));
            }
        };
        let request = match api_request::forward_request(
            input,
            caller.authorization.clone(),
            caller.client_ip,
        ) {
            Ok(request) => request,
            Err(error) => return Ok(refusal(&ApiError::from(error))),
        };
        let response = self
            .inner
            .forwarder
            .forward(request, self.inner.max_response_bytes)
            .await
            .map_err(|error| {
                tracing::error!(%error, "api_request could not run the gateway pipeline");
                ErrorData::internal_error("the gateway pipeline failed", None)
            })?;
        let refused = response.refused;
        let output = serde_json::to_value(api_request::output(response))
            .map_err(|_| ErrorData::internal_error("the tool output did not serialize", None))?;
        Ok(if refused {
            CallToolResult::structured_error(output)
        } else {
            CallToolResult::structured(output)
        })
    }
}

/// A refusal decided before the gateway request (bad input), shaped like the gateway's own.
fn refusal(error: &ApiError) -> CallToolResult {
    let output = ApiRequestOutput {
        status: error.status().as_u16(),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body: error.body(),
        body_encoding: None,
        truncated: None,
        size: None,
    };
    match serde_json::to_value(output) {
        Ok(value) => CallToolResult::structured_error(value),
        Err(_) => CallToolResult::error(vec![rmcp::model::ContentBlock::text(
            error.public_message(),
        )]),
    }
}

fn tool_list() -> Vec<Tool> {
    let discover_input: Arc<JsonObject> = Arc::new(object(serde_json::json!({
        "type": "object",
        "properties": {},
        "additionalProperties": false,
    })));
    let discover_output: Arc<JsonObject> = Arc::new(object(discover_output_schema()));
    let read_only = ToolAnnotations::new().read_only(true).open_world(false);
    let discover = |name: &'static str, description: &'static str| {
        Tool::new(name, description, discover_input.clone())
            .with_raw_output_schema(discover_output.clone())
            .with_annotations(read_only.clone())
    };
    vec![
        discover(
            "discover",
            "List the targets (upstream APIs) this token may use, with their slugs for \
             api_request. Managed targets name the connected account (provider, email, \
             mailbox or calendar) they act for. Call this first.",
        ),
        discover("bootstrap", "Alias of discover."),
        Tool::new(
            "api_request",
            "Send one HTTP request to a target through Gatehouse, which injects the target's \
             credential. Returns the upstream's status, headers and body (JSON parsed, text as \
             text, binary as base64); a body over the server's limit is cut (truncated, size).",
            schema_for_type::<ApiRequestInput>(),
        )
        .with_raw_output_schema(schema_for_output::<ApiRequestOutput>())
        .with_annotations(ToolAnnotations::new().open_world(true)),
    ]
}

/// The shape of the `/discovery` body (`access::discovery`).
fn discover_output_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["targets"],
        "properties": {
            "targets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["slug", "name", "type", "proxy", "base_url"],
                    "properties": {
                        "slug": {"type": "string"},
                        "name": {"type": "string"},
                        "type": {"type": "string", "enum": ["api"]},
                        "proxy": {"type": "string"},
                        "base_url": {"type": "string"},
                        "integration": {
                            "type": "object",
                            "required": ["provider", "email", "status"],
                            "properties": {
                                "provider": {"type": "string"},
                                "email": {"type": "string"},
                                "capability": {"type": ["string", "null"]},
                                "status": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "message": {"type": "string"},
        },
    })
}

fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

impl ServerHandler for GatehouseTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("gatehouse", env!("CARGO_PKG_VERSION")).with_title("Gatehouse"),
            )
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(SUPPORTED_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner
            .tools
            .iter()
            .find(|tool| tool.name == name)
            .cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<McpCaller>())
            .cloned()
            // Only the proxy calls this service, and only after steps 1–2.
            .ok_or_else(|| ErrorData::internal_error("request without a caller", None))?;
        let result = match request.name.as_ref() {
            "discover" | "bootstrap" => self.discover(&caller),
            "api_request" => self.api_request(&caller, request.arguments).await?,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}
