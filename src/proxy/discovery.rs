//! `/discovery` and `/bootstrap`: the targets a token may use.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::access::TargetEntry;

pub fn body(targets: &[Arc<TargetEntry>]) -> Value {
    let list: Vec<Value> = targets
        .iter()
        .map(|entry| {
            let target = &entry.target;
            json!({
                "slug": target.slug.as_str(),
                "name": target.name,
                "type": "api",
                "proxy": format!("/gateway/{}", target.slug),
                "base_url": target.base_url.as_str(),
            })
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
