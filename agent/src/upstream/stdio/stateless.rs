//! Stateless clients (MCP 2026-07-28) ask `server/discover` instead of
//! initializing. The bridge serves them from a shared child it initialized
//! itself, answers `server/discover` from that child's initialize result,
//! and gives the child's results the fields 2026-07-28 requires
//! (`resultType`; `cacheScope` and `ttlMs` on cacheable results), which a
//! server of an older revision does not send.

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

/// Results of these methods are cacheable in 2026-07-28.
const CACHEABLE: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Completes the child's `result` of a `method` request for a 2026-07-28
/// client: fields the child set are kept, missing required ones added.
pub fn adapt_result(method: &str, response: &mut Value) {
    let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
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

    #[test]
    fn results_get_the_fields_2026_07_28_requires() {
        let mut list = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}});
        adapt_result("tools/list", &mut list);
        assert_eq!(
            list["result"],
            json!({"tools":[],"resultType":"complete","ttlMs":0,"cacheScope":"private"})
        );
        let mut call = json!({"jsonrpc":"2.0","id":1,"result":{"content":[],"resultType":"x"}});
        adapt_result("tools/call", &mut call);
        assert_eq!(
            call["result"],
            json!({"content":[],"resultType":"x"}),
            "kept, not cacheable"
        );
        let mut err = json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}});
        let before = err.clone();
        adapt_result("tools/list", &mut err);
        assert_eq!(err, before);
    }
}
