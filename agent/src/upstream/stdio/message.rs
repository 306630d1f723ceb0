//! JSON-RPC 2.0 messages as the bridge sees them: what kind a message is,
//! and the error responses the bridge itself writes.

use serde_json::{json, Value};

/// Internal error (the child crashed, could not be started, ...).
pub const INTERNAL_ERROR: i64 = -32603;
/// Method not found.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid request (no session, a batch, ...).
pub const INVALID_REQUEST: i64 = -32600;
/// Parse error.
pub const PARSE_ERROR: i64 = -32700;

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a method and an id: expects a response.
    Request,
    /// Has a method and no id.
    Notification,
    /// Has an id and a result or an error.
    Response,
    /// None of the above.
    Invalid,
}

/// Classifies `msg`.
pub fn kind(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid;
    };
    let has_id = obj.get("id").is_some_and(|id| !id.is_null());
    match (obj.get("method").and_then(Value::as_str), has_id) {
        (Some(_), true) => Kind::Request,
        (Some(_), false) => Kind::Notification,
        (None, true) if obj.contains_key("result") || obj.contains_key("error") => Kind::Response,
        (None, _) => Kind::Invalid,
    }
}

/// The method of a request or notification.
pub fn method(msg: &Value) -> Option<&str> {
    msg.get("method").and_then(Value::as_str)
}

/// An error response with `id`.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The `params._meta.progressToken` of a request, if any.
pub fn progress_token_mut(msg: &mut Value) -> Option<&mut Value> {
    msg.get_mut("params")?
        .get_mut("_meta")?
        .get_mut("progressToken")
        .filter(|t| !t.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1,"method":"x"})),
            Kind::Request
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","method":"x"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":null,"method":"x"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":2,"error":{}})),
            Kind::Response
        );
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":2})), Kind::Invalid);
        assert_eq!(kind(&json!([1, 2])), Kind::Invalid);
        assert_eq!(kind(&json!("text")), Kind::Invalid);
    }
}
