//! Asking the person through the MCP client (elicitation) before a held `api_request`, on a
//! stateless endpoint behind any balancer (docs/mcp.md, "Approvals"). The JSON-RPC shapes only;
//! the proxy's `/mcp` hand-off does the I/O.
//!
//! - The client's `elicitation` capability is known only to the `initialize` request. Its
//!   answer carries an `Mcp-Session-Id` that says so ([`SESSION_PREFIX`]), which the client
//!   sends on every later request, to whichever replica. It holds nothing else: it is the
//!   client's own declaration, so nothing needs to be signed.
//! - The elicitation request's JSON-RPC id names the approval ([`ID_PREFIX`]), so its answer,
//!   a separate POST that may reach another replica, is recorded as the approval's decision
//!   in the database. The replica that asked waits on that row, not on its own memory.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::guard::Decision;

/// `Mcp-Session-Id` of a client that declared the elicitation capability.
pub const SESSION_PREFIX: &str = "gatehouse-elicit-";

/// JSON-RPC id of an elicitation request about an approval.
pub const ID_PREFIX: &str = "gatehouse-approval:";

/// The form field the person answers.
const APPROVE_FIELD: &str = "approve";

/// What a POST to `/mcp` is, as far as elicitation cares.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// The client's answer to one of our elicitation requests. `None`: it answered with a
    /// JSON-RPC error (it could not ask), which decides nothing.
    Answer {
        approval_id: Uuid,
        decision: Option<Decision>,
    },
    /// `initialize` from a client that can be asked.
    InitializeWithElicitation,
    /// A `tools/call` of `api_request` (the parsed message, to repeat with an approval id).
    ApiRequest(Value),
    Other,
}

pub fn classify(body: &[u8]) -> Inbound {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return Inbound::Other;
    };
    if let Some(approval_id) = message
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.strip_prefix(ID_PREFIX))
        .and_then(|id| Uuid::parse_str(id).ok())
        && message.get("method").is_none()
    {
        let decision = message.get("result").map(decision_of);
        return Inbound::Answer {
            approval_id,
            decision,
        };
    }
    match message.get("method").and_then(Value::as_str) {
        Some("initialize")
            if message
                .pointer("/params/capabilities/elicitation")
                .is_some_and(Value::is_object) =>
        {
            Inbound::InitializeWithElicitation
        }
        Some("tools/call")
            if message.pointer("/params/name").and_then(Value::as_str) == Some("api_request")
                && message.get("id").is_some() =>
        {
            Inbound::ApiRequest(message)
        }
        _ => Inbound::Other,
    }
}

/// Accept with `approve: true` approves; anything else — accept with `false`, decline, or
/// cancel (dismissed without a choice) — denies: nothing passes on a non-answer.
fn decision_of(result: &Value) -> Decision {
    let accepted = result.get("action").and_then(Value::as_str) == Some("accept");
    let approved = result
        .pointer(&format!("/content/{APPROVE_FIELD}"))
        .and_then(Value::as_bool)
        == Some(true);
    if accepted && approved {
        Decision::Approve
    } else {
        Decision::Deny
    }
}

/// The approval an `api_request` result was held for: the gateway's `approval required`
/// refusal inside a JSON-RPC response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub approval_id: Uuid,
    pub reason: String,
}

pub fn held(response: &[u8]) -> Option<Held> {
    let message: Value = serde_json::from_slice(response).ok()?;
    let result = message.get("result")?;
    if result.get("isError").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let body = result.pointer("/structuredContent/body")?;
    if body.get("error").and_then(Value::as_str) != Some("approval required") {
        return None;
    }
    let approval_id = body
        .pointer("/approval/id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())?;
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some(Held {
        approval_id,
        reason,
    })
}

/// The `elicitation/create` request asking the person about `call` (the `tools/call`).
pub fn request(call: &Value, held: &Held, agent: &str) -> Value {
    let argument = |name: &str| {
        call.pointer(&format!("/params/arguments/{name}"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let message = format!(
        "Agent \"{agent}\" wants to {} {} on {}: {}. Allow this request once?",
        argument("method"),
        argument("path"),
        argument("target"),
        held.reason
    );
    json!({
        "jsonrpc": "2.0",
        "id": format!("{ID_PREFIX}{}", held.approval_id),
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {
                    APPROVE_FIELD: {
                        "type": "boolean",
                        "title": "Allow this request",
                        "description": "Allow it once; anything else refuses it.",
                    }
                },
                "required": [APPROVE_FIELD],
            }
        }
    })
}

/// `call` again, naming the approval (the gateway then passes it once if it was approved, or
/// answers why not).
pub fn with_approval(mut call: Value, approval_id: Uuid) -> Value {
    if let Some(arguments) = call
        .pointer_mut("/params/arguments")
        .and_then(Value::as_object_mut)
    {
        arguments.insert("approval_id".to_owned(), json!(approval_id.to_string()));
    }
    call
}

/// One server-sent event carrying a JSON-RPC message.
pub fn sse_event(message: &[u8]) -> Vec<u8> {
    let mut event = Vec::with_capacity(message.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(message);
    event.extend_from_slice(b"\n\n");
    event
}

/// A fresh session id for a client that can be asked.
pub fn session_id() -> String {
    format!("{SESSION_PREFIX}{}", Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_their_approval_and_decide_strictly() {
        let id = Uuid::new_v4();
        let answer = |result: Value| {
            classify(
                json!({"jsonrpc": "2.0", "id": format!("{ID_PREFIX}{id}"), "result": result})
                    .to_string()
                    .as_bytes(),
            )
        };
        let decided = |decision| Inbound::Answer {
            approval_id: id,
            decision: Some(decision),
        };
        assert_eq!(
            answer(json!({"action": "accept", "content": {"approve": true}})),
            decided(Decision::Approve)
        );
        assert_eq!(
            answer(json!({"action": "accept", "content": {"approve": false}})),
            decided(Decision::Deny)
        );
        assert_eq!(answer(json!({"action": "accept"})), decided(Decision::Deny));
        assert_eq!(
            answer(json!({"action": "decline"})),
            decided(Decision::Deny)
        );
        assert_eq!(answer(json!({"action": "cancel"})), decided(Decision::Deny));
        let error = json!({"jsonrpc": "2.0", "id": format!("{ID_PREFIX}{id}"),
            "error": {"code": -32602, "message": "no"}});
        assert_eq!(
            classify(error.to_string().as_bytes()),
            Inbound::Answer {
                approval_id: id,
                decision: None
            }
        );
        // Someone else's response id is not ours.
        let other = json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept"}});
        assert_eq!(classify(other.to_string().as_bytes()), Inbound::Other);
    }

    #[test]
    fn initialize_and_tool_calls_are_recognised() {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"capabilities": {"elicitation": {"form": {}}}}});
        assert_eq!(
            classify(init.to_string().as_bytes()),
            Inbound::InitializeWithElicitation
        );
        let plain = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"capabilities": {}}});
        assert_eq!(classify(plain.to_string().as_bytes()), Inbound::Other);
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "api_request", "arguments": {"target": "t", "method": "DELETE", "path": "/x"}}});
        assert!(matches!(
            classify(call.to_string().as_bytes()),
            Inbound::ApiRequest(_)
        ));
        let again = with_approval(call, Uuid::nil());
        assert_eq!(
            again.pointer("/params/arguments/approval_id"),
            Some(&json!(Uuid::nil().to_string()))
        );
        assert_eq!(classify(b"not json"), Inbound::Other);
    }

    #[test]
    fn held_results_are_found_and_asked_about() {
        let id = Uuid::new_v4();
        let response = json!({"jsonrpc": "2.0", "id": 3, "result": {"isError": true,
            "structuredContent": {"status": 403, "headers": {}, "body": {
                "error": "approval required", "reason": "DELETE needs a person's approval",
                "approval": {"id": id, "url": "http://a/ui/approvals/x", "expires_at": "t"}}}}});
        let held = held(response.to_string().as_bytes()).unwrap();
        assert_eq!(held.approval_id, id);
        let denied = json!({"jsonrpc": "2.0", "id": 3, "result": {"isError": true,
            "structuredContent": {"status": 403, "body": {"error": "approval denied"}}}});
        assert_eq!(super::held(denied.to_string().as_bytes()), None);
        let call =
            json!({"params": {"arguments": {"target": "t", "method": "DELETE", "path": "/x"}}});
        let request = request(&call, &held, "ci-agent");
        assert_eq!(request["id"], json!(format!("{ID_PREFIX}{id}")));
        let message = request["params"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"ci-agent\" wants to DELETE /x on t"),
            "{message}"
        );
    }
}
