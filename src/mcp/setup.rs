//! Copy-ready set-up of an MCP client for one token: what the CLI prints after `token create`
//! and the web UI shows on the token pages.

use url::Url;

/// Shown instead of the token where its plaintext is no longer known.
pub const TOKEN_PLACEHOLDER: &str = "<your sg_ token>";

/// `{public_url}/mcp`, with or without a trailing slash on the configured base.
pub fn endpoint(public_url: &Url) -> String {
    format!("{}/mcp", public_url.as_str().trim_end_matches('/'))
}

/// The Claude Code command that registers Gatehouse as an HTTP MCP server.
pub fn claude_command(public_url: &Url, token: &str) -> String {
    format!(
        "claude mcp add --transport http gatehouse {} --header \"Authorization: Bearer {token}\"",
        endpoint(public_url)
    )
}

/// The `mcpServers` entry most MCP clients read (Cursor, Claude Desktop, agent frameworks).
pub fn mcp_servers_json(public_url: &Url, token: &str) -> String {
    let entry = serde_json::json!({
        "mcpServers": {
            "gatehouse": {
                "url": endpoint(public_url),
                "headers": {"Authorization": format!("Bearer {token}")},
            }
        }
    });
    serde_json::to_string_pretty(&entry).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_name_the_endpoint_and_the_token() {
        let url = Url::parse("https://gw.example.com/").unwrap();
        assert_eq!(endpoint(&url), "https://gw.example.com/mcp");
        assert_eq!(
            claude_command(&url, "sg_abc"),
            "claude mcp add --transport http gatehouse https://gw.example.com/mcp --header \"Authorization: Bearer sg_abc\""
        );
        let json: serde_json::Value =
            serde_json::from_str(&mcp_servers_json(&url, "sg_abc")).unwrap();
        assert_eq!(
            json["mcpServers"]["gatehouse"]["url"],
            "https://gw.example.com/mcp"
        );
        assert_eq!(
            json["mcpServers"]["gatehouse"]["headers"]["Authorization"],
            "Bearer sg_abc"
        );
    }
}
