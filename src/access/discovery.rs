//! The body of `GET /discovery` (and `/bootstrap`, and the MCP `discover` tool): the targets a
//! token may use.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Injection, TargetEntry};

pub fn body(targets: &[Arc<TargetEntry>]) -> Value {
    let list: Vec<Value> = targets
        .iter()
        .map(|entry| {
            let target = &entry.target;
            let mut item = json!({
                "slug": target.slug.as_str(),
                "name": target.name,
                "type": "api",
                "proxy": format!("/gateway/{}", target.slug),
                "base_url": target.base_url.as_str(),
            });
            if let Injection::Account(account) = &entry.injection {
                item["integration"] = json!({
                    "provider": account.provider,
                    "email": account.email,
                    "capability": target.capability.map(|c| c.as_str()),
                    "status": account.status.as_str(),
                });
            }
            item
        })
        .collect();
    if list.is_empty() {
        json!({
            "targets": list,
            "message": "this token has no targets yet: ask your Gatehouse admin to grant it access",
        })
    } else {
        json!({ "targets": list })
    }
}
