//! Stateless clients (MCP 2026-07-28) ask `server/discover` instead of
//! initializing. The bridge serves them from a shared child it initialized
//! itself, and answers `server/discover` from that child's initialize
//! result.

use serde_json::{json, Map, Value};

/// The stateless protocol revision the bridge speaks to clients.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// The revision the bridge asks a shared child for when it initializes it
/// (a server that does not speak it answers with one it does).
pub const CHILD_VERSION: &str = "2025-11-25";

/// The `initialize` request the bridge sends a shared child.
pub fn initialize_request() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": CHILD_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "drawbridge-agent", "version": env!("CARGO_PKG_VERSION")},
        },
    })
}

/// The `notifications/initialized` that completes the handshake.
pub fn initialized_notification() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

/// The `server/discover` result for a child whose `initialize` result is
/// `init`: its capabilities, instructions and identity.
pub fn result(init: &Value) -> Value {
    let mut meta = Map::new();
    if let Some(info) = init.get("serverInfo") {
        meta.insert("io.modelcontextprotocol/serverInfo".into(), info.clone());
    }
    let mut out = json!({
        "resultType": "complete",
        "supportedVersions": [STATELESS_VERSION],
        "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": meta,
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        out["instructions"] = i.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_carries_the_childs_capabilities_and_identity() {
        let init = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "sqlite", "version": "0.1.0"},
            "instructions": "be nice",
        });
        let r = result(&init);
        assert_eq!(r["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(r["capabilities"], init["capabilities"]);
        assert_eq!(
            r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "sqlite"
        );
        assert_eq!(r["instructions"], "be nice");
        assert_eq!(r["cacheScope"], "private");
        let bare = result(&json!({}));
        assert_eq!(bare["capabilities"], json!({}));
        assert!(bare.get("instructions").is_none());
    }
}
