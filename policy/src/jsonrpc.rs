//! Classifying the JSON-RPC messages an MCP client POSTs, for the per-message
//! policy.
//!
//! [`classify_body`] turns one HTTP body into the [`Message`]s it carries: what
//! kind each is, its id and method, and for the MCP methods that name a target
//! (a tool, a resource, a prompt) that target and the arguments. [`check_headers`]
//! checks the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers against the body, so
//! that nothing downstream can be steered by a header the body does not vouch
//! for. Both are pure and I/O-free.
//!
//! # Decisions
//!
//! * A body is one message or (protocol 2025-03-26) a batch: a non-empty array
//!   of messages ([`is_batch`] tells which, so later revisions can refuse
//!   batches). One invalid member refuses the whole batch: nothing in a batch
//!   the relay cannot fully understand is forwarded.
//! * Bytes that are not JSON (including nesting deeper than `serde_json`'s limit
//!   of 128, trailing garbage and invalid UTF-8) are [`ParseError::InvalidJson`]
//!   (-32700). Valid JSON that is not a JSON-RPC 2.0 message is
//!   [`ParseError::InvalidRequest`] (-32600).
//! * **Duplicate object keys are refused** (-32600), at any depth. JSON parsers
//!   disagree on which duplicate wins; a relay that judged `"name": "a"` while the
//!   server ran `"name": "b"` would authorize one thing and forward another.
//! * `jsonrpc` must be exactly `"2.0"`. An `id` must be a string or an integer
//!   (MCP's `RequestId`); only an error response may have a `null` id. Methods
//!   are case-sensitive. Unknown members are ignored; `params` may be absent (or
//!   `null`, treated as absent).
//! * A message of an MCP method that names a target must name it:
//!   `tools/call` and `prompts/get` need a string `params.name`,
//!   `resources/read`/`subscribe`/`unsubscribe` a string `params.uri`, and
//!   `arguments`, when present and not `null`, must be an object. Otherwise
//!   [`ParseError::InvalidParams`] (-32602): the policy must never see a tool
//!   call without a tool.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// `tools/call`: its target is the tool name (`params.name`).
pub const TOOLS_CALL: &str = "tools/call";
/// `prompts/get`: its target is the prompt name (`params.name`).
pub const PROMPTS_GET: &str = "prompts/get";
/// `resources/read`: its target is the resource URI (`params.uri`).
pub const RESOURCES_READ: &str = "resources/read";
/// `resources/subscribe`: its target is the resource URI (`params.uri`).
pub const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
/// `resources/unsubscribe`: its target is the resource URI (`params.uri`).
pub const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
/// `initialize`: carries `params.protocolVersion` (revisions before 2026-07-28).
pub const INITIALIZE: &str = "initialize";

/// The `_meta` key of the protocol version in 2026-07-28 requests.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// Header that mirrors the body's `method` (2026-07-28).
pub const MCP_METHOD_HEADER: &str = "Mcp-Method";
/// Header that mirrors the body's tool/prompt name or resource URI (2026-07-28).
pub const MCP_NAME_HEADER: &str = "Mcp-Name";

/// JSON-RPC "Parse error".
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC "Invalid params".
pub const INVALID_PARAMS: i64 = -32602;
/// MCP `HeaderMismatch` (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;

/// Why a body could not be classified. Each maps to the JSON-RPC error the
/// client gets back ([`ParseError::to_jsonrpc_error`]); nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON (-32700).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not a JSON-RPC 2.0 message or batch (-32600).
    #[error("invalid JSON-RPC request: {0}")]
    InvalidRequest(String),
    /// The body is an empty batch `[]` (-32600).
    #[error("invalid JSON-RPC request: empty batch")]
    EmptyBatch,
    /// A targeted MCP method lacks its target or has malformed arguments
    /// (-32602).
    #[error("invalid params: {0}")]
    InvalidParams(String),
}

impl ParseError {
    /// The JSON-RPC error code: -32700, -32600 or -32602.
    pub fn code(&self) -> i64 {
        match self {
            Self::InvalidJson(_) => PARSE_ERROR,
            Self::InvalidRequest(_) | Self::EmptyBatch => INVALID_REQUEST,
            Self::InvalidParams(_) => INVALID_PARAMS,
        }
    }

    /// The standard JSON-RPC message for [`ParseError::code`].
    pub fn message(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "Parse error",
            Self::InvalidRequest(_) | Self::EmptyBatch => "Invalid Request",
            Self::InvalidParams(_) => "Invalid params",
        }
    }

    /// The JSON-RPC error response for this error:
    /// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…,"data":…}}`,
    /// `data` holding the detail. `id` is `null` when `None` (as JSON-RPC
    /// requires when the id could not be read).
    pub fn to_jsonrpc_error(&self, id: Option<&Value>) -> Value {
        error_response(id, self.code(), self.message(), Some(self.to_string()))
    }
}

fn error_response(id: Option<&Value>, code: i64, message: &str, data: Option<String>) -> Value {
    let mut error = Map::new();
    error.insert("code".to_owned(), Value::from(code));
    error.insert("message".to_owned(), Value::from(message));
    if let Some(data) = data {
        error.insert("data".to_owned(), Value::from(data));
    }
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": Value::Object(error),
    })
}

/// What kind of JSON-RPC message it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result`.
    Response,
    /// Has `error` (and an `id`, possibly `null`).
    Error,
}

impl MessageKind {
    /// `"request"`, `"notification"`, `"response"` or `"error"`, for audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Notification => "notification",
            Self::Response => "response",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One classified JSON-RPC message: what the policy decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Request, notification, response or error.
    pub kind: MessageKind,
    /// The id (a JSON string or integer); `None` for notifications and for
    /// error responses whose id is `null`.
    pub id: Option<Value>,
    /// The method, for requests and notifications.
    pub method: Option<String>,
    /// What the method acts on: the tool name for `tools/call`, the prompt
    /// name for `prompts/get`, the resource URI for `resources/read`,
    /// `resources/subscribe` and `resources/unsubscribe`; `None` otherwise.
    pub target: Option<String>,
    /// `params.arguments` of `tools/call` and `prompts/get` (an object), when
    /// present.
    pub arguments: Option<Value>,
    /// The protocol version the message states, as written: its
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`, or for
    /// `initialize` its `params.protocolVersion`.
    pub protocol_version: Option<String>,
}

impl Message {
    /// The SQL a SQLite tool is asked to run: `arguments.query` of a
    /// `tools/call`, when it is a string. (The reference SQLite server's
    /// `read_query`, `write_query` and `create_table` all take `query`.)
    pub fn sql_argument(&self) -> Option<&str> {
        if self.method.as_deref() != Some(TOOLS_CALL) {
            return None;
        }
        self.arguments.as_ref()?.get("query")?.as_str()
    }
}

/// Whether a body is a batch (a JSON array), judged by its first
/// non-whitespace byte. Revisions after 2025-03-26 forbid batches.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'[')
}

/// Classify an HTTP body: one JSON-RPC message, or a batch of them (in order).
///
/// Fails with the error the whole body should be answered with; see the module
/// docs for every rule.
pub fn classify_body(body: &[u8]) -> Result<Vec<Message>, ParseError> {
    let StrictValue(value) = serde_json::from_slice(body).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            // Only our own checks (duplicate keys) raise data errors here.
            ParseError::InvalidRequest(e.to_string())
        } else {
            ParseError::InvalidJson(e.to_string())
        }
    })?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::EmptyBatch);
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    classify_message(item).map_err(|e| match e {
                        ParseError::InvalidRequest(m) => {
                            ParseError::InvalidRequest(format!("batch member {i}: {m}"))
                        }
                        ParseError::InvalidParams(m) => {
                            ParseError::InvalidParams(format!("batch member {i}: {m}"))
                        }
                        other => other,
                    })
                })
                .collect()
        }
        other => Ok(vec![classify_message(other)?]),
    }
}

/// The `id` member as found.
enum Id {
    Absent,
    Null,
    Valid(Value),
}

fn take_id(obj: &mut Map<String, Value>) -> Result<Id, ParseError> {
    match obj.remove("id") {
        None => Ok(Id::Absent),
        Some(Value::Null) => Ok(Id::Null),
        Some(v @ Value::String(_)) => Ok(Id::Valid(v)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Id::Valid(Value::Number(n))),
        Some(_) => Err(invalid("\"id\" must be a string or an integer")),
    }
}

fn invalid(reason: &str) -> ParseError {
    ParseError::InvalidRequest(reason.to_owned())
}

fn classify_message(value: Value) -> Result<Message, ParseError> {
    let Value::Object(mut obj) = value else {
        return Err(invalid("a JSON-RPC message must be an object"));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = take_id(&mut obj)?;
    let has_result = obj.contains_key("result");
    let has_error = obj.contains_key("error");

    match obj.remove("method") {
        Some(Value::String(method)) => {
            if has_result || has_error {
                return Err(invalid("a request cannot carry \"result\" or \"error\""));
            }
            let (kind, id) = match id {
                Id::Absent => (MessageKind::Notification, None),
                Id::Valid(id) => (MessageKind::Request, Some(id)),
                Id::Null => return Err(invalid("\"id\" must be a string or an integer")),
            };
            let params = match obj.remove("params") {
                None | Some(Value::Null) => None,
                Some(Value::Object(params)) => Some(params),
                Some(Value::Array(_)) => {
                    if target_field(&method).is_some() {
                        return Err(ParseError::InvalidParams(format!(
                            "{method} needs \"params\" to be an object"
                        )));
                    }
                    None
                }
                Some(_) => return Err(invalid("\"params\" must be an object or an array")),
            };
            let details = method_details(&method, params)?;
            Ok(Message {
                kind,
                id,
                method: Some(method),
                target: details.target,
                arguments: details.arguments,
                protocol_version: details.protocol_version,
            })
        }
        Some(_) => Err(invalid("\"method\" must be a string")),
        None => {
            let (kind, id) = match (has_result, has_error, id) {
                (true, true, _) => {
                    return Err(invalid("a response cannot carry both \"result\" and \"error\""))
                }
                (true, false, Id::Valid(id)) => (MessageKind::Response, Some(id)),
                (true, false, _) => {
                    return Err(invalid("a response needs a string or integer \"id\""))
                }
                (false, true, Id::Valid(id)) => (MessageKind::Error, Some(id)),
                (false, true, Id::Null) => (MessageKind::Error, None),
                (false, true, Id::Absent) => {
                    return Err(invalid("an error response needs an \"id\""))
                }
                (false, false, _) => {
                    return Err(invalid(
                        "not a request, notification or response (no \"method\", \"result\" or \"error\")",
                    ))
                }
            };
            if kind == MessageKind::Error {
                let ok = obj
                    .get("error")
                    .and_then(Value::as_object)
                    .is_some_and(|e| {
                        e.get("code").is_some_and(|c| c.is_i64())
                            && e.get("message").is_some_and(Value::is_string)
                    });
                if !ok {
                    return Err(invalid(
                        "\"error\" must be an object with an integer \"code\" and a string \"message\"",
                    ));
                }
            }
            Ok(Message {
                kind,
                id,
                method: None,
                target: None,
                arguments: None,
                protocol_version: None,
            })
        }
    }
}

/// The params member that names a method's target, if the method has one.
fn target_field(method: &str) -> Option<&'static str> {
    match method {
        TOOLS_CALL | PROMPTS_GET => Some("name"),
        RESOURCES_READ | RESOURCES_SUBSCRIBE | RESOURCES_UNSUBSCRIBE => Some("uri"),
        _ => None,
    }
}

#[derive(Default)]
struct Details {
    target: Option<String>,
    arguments: Option<Value>,
    protocol_version: Option<String>,
}

fn method_details(method: &str, params: Option<Map<String, Value>>) -> Result<Details, ParseError> {
    let field = target_field(method);
    let Some(mut params) = params else {
        if let Some(field) = field {
            return Err(ParseError::InvalidParams(format!(
                "{method} needs a string \"params.{field}\""
            )));
        }
        return Ok(Details::default());
    };

    let protocol_version = params
        .get("_meta")
        .and_then(|m| m.get(PROTOCOL_VERSION_META))
        .and_then(Value::as_str)
        .or_else(|| {
            (method == INITIALIZE)
                .then(|| params.get("protocolVersion").and_then(Value::as_str))
                .flatten()
        })
        .map(str::to_owned);

    let target = match field {
        None => None,
        Some(field) => match params.remove(field) {
            Some(Value::String(t)) => Some(t),
            _ => {
                return Err(ParseError::InvalidParams(format!(
                    "{method} needs a string \"params.{field}\""
                )))
            }
        },
    };

    let arguments = if method == TOOLS_CALL || method == PROMPTS_GET {
        match params.remove("arguments") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(_) => {
                return Err(ParseError::InvalidParams(format!(
                    "{method} needs \"params.arguments\" to be an object"
                )))
            }
        }
    } else {
        None
    };

    Ok(Details {
        target,
        arguments,
        protocol_version,
    })
}

/// A JSON value parsed like `serde_json::Value`, except that an object with a
/// duplicate key is an error.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|v| v.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            match map.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format!(
                        "duplicate key {:?}",
                        truncate(slot.key(), 64)
                    )));
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// Why the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers do not vouch for the
/// body. Always answered with HTTP 400 and JSON-RPC error -32020
/// (`HeaderMismatch`); the message is never forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// A request came without `Mcp-Method`.
    #[error("Header mismatch: the Mcp-Method header is missing")]
    MissingMethod,
    /// `Mcp-Method` differs from the body's method (or the body has none).
    #[error("Header mismatch: Mcp-Method header value {header:?} does not match body value {}", shown(.body))]
    Method {
        /// The header's value (cut to 128 bytes).
        header: String,
        /// The body's method, if any.
        body: Option<String>,
    },
    /// A `tools/call`, `resources/read` or `prompts/get` request came without
    /// `Mcp-Name`.
    #[error("Header mismatch: the Mcp-Name header is missing")]
    MissingName,
    /// `Mcp-Name` (decoded) differs from the body's target (or the body has
    /// none).
    #[error("Header mismatch: Mcp-Name header value {header:?} does not match body value {}", shown(.body))]
    Name {
        /// The header's decoded value (cut to 128 bytes).
        header: String,
        /// The body's target, if any.
        body: Option<String>,
    },
    /// A header value has characters a header may not carry, or a malformed
    /// `=?base64?…?=` form.
    #[error("Header mismatch: the {header} header value is malformed: {reason}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl HeaderMismatch {
    /// The JSON-RPC error code, always -32020 (`HeaderMismatch`).
    pub fn code(&self) -> i64 {
        HEADER_MISMATCH
    }

    /// The HTTP status to answer with, always 400 Bad Request.
    pub fn http_status(&self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }

    /// The JSON-RPC error response: `{"jsonrpc":"2.0","id":…,"error":
    /// {"code":-32020,"message":"Header mismatch: …"}}`.
    pub fn to_jsonrpc_error(&self, id: Option<&Value>) -> Value {
        error_response(id, self.code(), &self.to_string(), None)
    }
}

/// A body value for an error message: quoted, or "(none)".
fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "(none)".to_owned(),
    }
}

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Check the 2026-07-28 request headers against the body they came with.
///
/// * `Mcp-Method` is required on a request and must equal its method exactly
///   (case-sensitive). On a notification it is optional (the revision defines
///   no header rules for notification POSTs) but must match when present. A
///   response or error carries no method, so any `Mcp-Method` mismatches.
/// * `Mcp-Name` is required on `tools/call`, `resources/read` and
///   `prompts/get` requests and must equal the target (tool or prompt name,
///   resource URI). On any other message it is optional but, when present,
///   must equal the target — and a message with no target has nothing to
///   match, so a `Mcp-Name` there mismatches.
/// * `Mcp-Name` may come as `=?base64?<standard base64 of UTF-8>?=` (exact,
///   lowercase markers); it is decoded before comparing. `Mcp-Method` is
///   compared as sent. A value with characters outside visible ASCII, space
///   and tab, or a sentinel that is not valid base64 of UTF-8, is malformed.
///
/// The policy decides on the body alone; this only refuses requests whose
/// headers could mislead anything that routes or logs on them. Header values
/// are passed as received (HTTP has already trimmed surrounding whitespace).
pub fn check_headers(
    method_header: Option<&str>,
    name_header: Option<&str>,
    msg: &Message,
) -> Result<(), HeaderMismatch> {
    if let Some(h) = method_header {
        check_chars(h, MCP_METHOD_HEADER)?;
    }
    let name = name_header
        .map(|h| {
            check_chars(h, MCP_NAME_HEADER)?;
            decode_header_value(h).ok_or(HeaderMismatch::Malformed {
                header: MCP_NAME_HEADER,
                reason: "not valid =?base64?…?= of UTF-8",
            })
        })
        .transpose()?;

    match (method_header, &msg.method) {
        (None, _) if msg.kind == MessageKind::Request => return Err(HeaderMismatch::MissingMethod),
        (None, _) => {}
        (Some(h), Some(m)) if h == m => {}
        (Some(h), body) => {
            return Err(HeaderMismatch::Method {
                header: truncate(h, 128).to_owned(),
                body: body.clone(),
            })
        }
    }

    let name_required = msg.kind == MessageKind::Request
        && matches!(
            msg.method.as_deref(),
            Some(TOOLS_CALL | RESOURCES_READ | PROMPTS_GET)
        );
    match (name, &msg.target) {
        (None, _) if name_required => Err(HeaderMismatch::MissingName),
        (None, _) => Ok(()),
        (Some(h), Some(t)) if &h == t => Ok(()),
        (Some(h), body) => Err(HeaderMismatch::Name {
            header: truncate(&h, 128).to_owned(),
            body: body.clone(),
        }),
    }
}

/// Header values may carry visible ASCII, space and horizontal tab.
fn check_chars(value: &str, header: &'static str) -> Result<(), HeaderMismatch> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Ok(())
    } else {
        Err(HeaderMismatch::Malformed {
            header,
            reason: "characters outside visible ASCII, space and tab",
        })
    }
}

/// Decode the `=?base64?…?=` form of a header value; other values are
/// returned as they are. `None` if the sentinel holds invalid base64 or
/// invalid UTF-8. Padding is optional; the alphabet is standard base64.
pub fn decode_header_value(value: &str) -> Option<String> {
    let is_sentinel = value.len() >= BASE64_PREFIX.len() + BASE64_SUFFIX.len()
        && value.starts_with(BASE64_PREFIX)
        && value.ends_with(BASE64_SUFFIX);
    if !is_sentinel {
        return Some(value.to_owned());
    }
    let inner = &value[BASE64_PREFIX.len()..value.len() - BASE64_SUFFIX.len()];
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = ENGINE.decode(inner).ok()?;
    String::from_utf8(bytes).ok()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(body: &str) -> Message {
        let mut messages = classify_body(body.as_bytes()).expect("classifies");
        assert_eq!(messages.len(), 1, "{body}");
        messages.remove(0)
    }

    fn err(body: &[u8]) -> ParseError {
        classify_body(body).expect_err("must be refused")
    }

    fn call(name: &str) -> Message {
        one(
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name}})
                .to_string(),
        )
    }

    #[test]
    fn tools_call_request() {
        let m = one(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call",
                "params":{"name":"read_query","arguments":{"query":"SELECT 1"}}}"#);
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(m.id, Some(json!(7)));
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.target.as_deref(), Some("read_query"));
        assert_eq!(m.arguments, Some(json!({"query":"SELECT 1"})));
        assert_eq!(m.sql_argument(), Some("SELECT 1"));
        assert_eq!(m.protocol_version, None);
    }

    #[test]
    fn tools_call_without_arguments() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"list_tables"}}"#,
        );
        assert_eq!(m.target.as_deref(), Some("list_tables"));
        assert_eq!(m.arguments, None);
        assert_eq!(m.sql_argument(), None);
        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t","arguments":null}}"#,
        );
        assert_eq!(m.arguments, None);
        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t","arguments":{}}}"#,
        );
        assert_eq!(m.arguments, Some(json!({})));
    }

    #[test]
    fn tools_call_must_name_a_tool() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":42}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["read_query"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":"SELECT 1"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{}}}"#,
        ] {
            let e = err(body.as_bytes());
            assert!(matches!(e, ParseError::InvalidParams(_)), "{body}: {e:?}");
            assert_eq!(e.code(), -32602, "{body}");
        }
    }

    #[test]
    fn sql_argument_only_for_tool_calls_with_string_query() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"query":5}}}"#,
        );
        assert_eq!(m.sql_argument(), None);
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"sql":"x"}}}"#,
        );
        assert_eq!(m.sql_argument(), None);
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"query":"DROP TABLE t"}}}"#,
        );
        assert_eq!(m.sql_argument(), None);
        let m = one(
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"w","arguments":{"query":"DELETE FROM t"}}}"#,
        );
        assert_eq!(m.kind, MessageKind::Notification);
        assert_eq!(m.sql_argument(), Some("DELETE FROM t"));
    }

    #[test]
    fn notification() {
        let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(m.kind, MessageKind::Notification);
        assert_eq!(m.id, None);
        assert_eq!(m.method.as_deref(), Some("notifications/initialized"));
        assert_eq!(m.target, None);
        let m =
            one(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#);
        assert_eq!(m.kind, MessageKind::Notification);
    }

    #[test]
    fn response_and_error_response() {
        let m = one(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#);
        assert_eq!(m.kind, MessageKind::Response);
        assert_eq!(m.id, Some(json!(3)));
        assert_eq!(m.method, None);
        let m = one(r#"{"jsonrpc":"2.0","id":"x","result":null}"#);
        assert_eq!(m.kind, MessageKind::Response);
        let m =
            one(r#"{"jsonrpc":"2.0","id":"x","error":{"code":-32601,"message":"nope","data":{}}}"#);
        assert_eq!(m.kind, MessageKind::Error);
        assert_eq!(m.id, Some(json!("x")));
        let m =
            one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#);
        assert_eq!(m.kind, MessageKind::Error);
        assert_eq!(m.id, None);
        for body in [
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
            r#"{"jsonrpc":"2.0","error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":"bad"}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"1","message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            let e = err(body.as_bytes());
            assert!(matches!(e, ParseError::InvalidRequest(_)), "{body}: {e:?}");
            assert_eq!(e.code(), -32600);
        }
    }

    #[test]
    fn mixed_batch_keeps_order() {
        let body = r#"[
            {"jsonrpc":"2.0","id":1,"method":"tools/list"},
            {"jsonrpc":"2.0","method":"notifications/initialized"},
            {"jsonrpc":"2.0","id":2,"result":{}},
            {"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"memo://insights"}},
            {"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"m"}}
        ]"#;
        assert!(is_batch(body.as_bytes()));
        let messages = classify_body(body.as_bytes()).expect("batch");
        let kinds: Vec<_> = messages.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["request", "notification", "response", "request", "error"]
        );
        assert_eq!(messages[3].target.as_deref(), Some("memo://insights"));
        assert_eq!(messages[0].id, Some(json!(1)));
        // A batch of one is still a batch.
        let body = br#" [{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
        assert!(is_batch(body));
        assert_eq!(classify_body(body).expect("batch").len(), 1);
        assert!(!is_batch(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#));
        assert!(!is_batch(b""));
    }

    #[test]
    fn bad_batches() {
        assert_eq!(err(b"[]"), ParseError::EmptyBatch);
        assert_eq!(err(b" [ ] ").code(), -32600);
        let e = err(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 5]"#);
        assert!(
            matches!(&e, ParseError::InvalidRequest(m) if m.contains("member 1")),
            "{e:?}"
        );
        let e = err(br#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#);
        assert!(matches!(e, ParseError::InvalidRequest(_)), "{e:?}");
        let e = err(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#);
        assert!(
            matches!(&e, ParseError::InvalidParams(m) if m.contains("member 1")),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        for body in [
            &b""[..],
            b"   ",
            b"{",
            b"{\"jsonrpc\":\"2.0\",}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} trailing",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffing\"}",
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
            b"{'jsonrpc':'2.0'}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\\ud800\"}",
            b"NaN",
        ] {
            let e = err(body);
            assert!(matches!(e, ParseError::InvalidJson(_)), "{body:?}: {e:?}");
            assert_eq!(e.code(), -32700);
            assert_eq!(e.message(), "Parse error");
        }
    }

    #[test]
    fn valid_json_that_is_not_json_rpc() {
        for body in [
            "42",
            "\"tools/call\"",
            "null",
            "true",
            "{}",
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0 ","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
        ] {
            let e = err(body.as_bytes());
            assert!(matches!(e, ParseError::InvalidRequest(_)), "{body}: {e:?}");
            assert_eq!(e.code(), -32600, "{body}");
            assert_eq!(e.message(), "Invalid Request");
        }
    }

    #[test]
    fn id_types() {
        for (id, expected) in [
            ("1", json!(1)),
            ("-5", json!(-5)),
            ("0", json!(0)),
            ("18446744073709551615", json!(u64::MAX)),
            ("\"abc\"", json!("abc")),
            ("\"\"", json!("")),
        ] {
            let m = one(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            assert_eq!(m.id, Some(expected), "{id}");
            assert_eq!(m.kind, MessageKind::Request);
        }
        for id in ["null", "1.5", "1e3", "true", "{}", "[1]"] {
            let e = err(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).as_bytes());
            assert!(matches!(e, ParseError::InvalidRequest(_)), "{id}: {e:?}");
            let e = err(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#).as_bytes());
            assert!(matches!(e, ParseError::InvalidRequest(_)), "{id}: {e:?}");
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        // Not MCP's tools/call, so no target is required or extracted.
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"x"}}"#);
        assert_eq!(m.method.as_deref(), Some("Tools/Call"));
        assert_eq!(m.target, None);
        assert_eq!(m.arguments, None);
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{}}"#);
        assert_eq!(m.target, None);
    }

    #[test]
    fn resources_and_prompts() {
        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            let m = one(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"file:///a b/ü.txt","name":"ignored"}}}}"#
            ));
            assert_eq!(m.target.as_deref(), Some("file:///a b/ü.txt"), "{method}");
            assert_eq!(m.arguments, None);
            let e = err(format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"x"}}}}"#
            )
            .as_bytes());
            assert!(matches!(e, ParseError::InvalidParams(_)), "{method}: {e:?}");
        }
        let m = one(
            r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"mcp-demo","arguments":{"topic":"cats"}}}"#,
        );
        assert_eq!(m.target.as_deref(), Some("mcp-demo"));
        assert_eq!(m.arguments, Some(json!({"topic":"cats"})));
        let e = err(br#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"uri":"x"}}"#);
        assert!(matches!(e, ParseError::InvalidParams(_)));
        // Other methods have no target.
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c","name":"n"}}"#,
        );
        assert_eq!(m.target, None);
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#);
        assert_eq!(m.target, None);
    }

    #[test]
    fn protocol_version() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",
               "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert_eq!(m.protocol_version.as_deref(), Some("2026-07-28"));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",
               "capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
        );
        assert_eq!(m.protocol_version.as_deref(), Some("2025-06-18"));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"protocolVersion":"2025-06-18"}}"#,
        );
        assert_eq!(
            m.protocol_version, None,
            "only initialize carries params.protocolVersion"
        );
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",
               "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert_eq!(m.protocol_version.as_deref(), Some("2026-07-28"));
        let m = one(
            r#"{"jsonrpc":"2.0","method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":5}}}"#,
        );
        assert_eq!(m.protocol_version, None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let m = one(
            r#"{"extra":[1,2],"jsonrpc":"2.0","id":1,"method":"tools/call","x-y":null,
               "params":{"name":"t","arguments":{"query":"SELECT 1"},"task":{"ttl":5},"_meta":{"progressToken":1}}}"#,
        );
        assert_eq!(m.target.as_deref(), Some("t"));
        assert_eq!(m.sql_argument(), Some("SELECT 1"));
        let m = one(r#"{"jsonrpc":"2.0","id":1,"result":{},"extra":true}"#);
        assert_eq!(m.kind, MessageKind::Response);
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1,2]}"#);
        assert_eq!(m.kind, MessageKind::Request);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","name":"write_query"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"query":"SELECT 1","query":"DROP TABLE t"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":{"b":1,"b":2}}}]"#,
        ] {
            let e = err(body.as_bytes());
            assert!(
                matches!(&e, ParseError::InvalidRequest(m) if m.contains("duplicate key")),
                "{body}: {e:?}"
            );
        }
        // The same key in different objects is fine.
        one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"name":"b"}}}"#,
        );
    }

    #[test]
    fn one_megabyte_body() {
        let sql = format!("SELECT '{}'", "x".repeat(1 << 20));
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"read_query","arguments":{"query":sql}}})
        .to_string();
        assert!(body.len() > 1 << 20);
        let m = one(&body);
        assert_eq!(m.sql_argument().map(str::len), Some(sql.len()));
        // And a large batch.
        let batch: Vec<Value> = (0..20_000)
            .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{"name":format!("t{i}")}}))
            .collect();
        let body = serde_json::to_vec(&batch).expect("encode");
        assert!(body.len() > 1 << 20);
        let messages = classify_body(&body).expect("batch");
        assert_eq!(messages.len(), 20_000);
        assert_eq!(messages[19_999].target.as_deref(), Some("t19999"));
    }

    #[test]
    fn deep_nesting_is_a_parse_error_not_a_crash() {
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deep_array = "[".repeat(100_000);
                let deep_args = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":{}1{}}}}}}}"#,
                    "[".repeat(200),
                    "]".repeat(200)
                );
                let shallow_args = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":{}1{}}}}}}}"#,
                    "[".repeat(100),
                    "]".repeat(100)
                );
                (
                    classify_body(deep_array.as_bytes()),
                    classify_body(deep_args.as_bytes()),
                    classify_body(shallow_args.as_bytes()),
                )
            })
            .expect("spawn")
            .join()
            .expect("must not crash");
        assert!(
            matches!(&result.0, Err(ParseError::InvalidJson(m)) if m.contains("recursion")),
            "{:?}",
            result.0
        );
        assert!(
            matches!(&result.1, Err(ParseError::InvalidJson(m)) if m.contains("recursion")),
            "{:?}",
            result.1
        );
        assert!(result.2.is_ok(), "{:?}", result.2);
    }

    #[test]
    fn parse_error_responses() {
        let e = err(b"{");
        let v = e.to_jsonrpc_error(None);
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["error"]["message"], "Parse error");
        assert!(v["error"]["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("invalid JSON")));
        let v = ParseError::EmptyBatch.to_jsonrpc_error(None);
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["message"], "Invalid Request");
        let v = ParseError::InvalidParams("x".into()).to_jsonrpc_error(Some(&json!("id-1")));
        assert_eq!(v["id"], "id-1");
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "Invalid params");
    }

    #[test]
    fn headers_match() {
        let m = call("read_query");
        assert_eq!(
            check_headers(Some("tools/call"), Some("read_query"), &m),
            Ok(())
        );
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"memo://insights"}}"#,
        );
        assert_eq!(
            check_headers(Some("resources/read"), Some("memo://insights"), &m),
            Ok(())
        );
        let m =
            one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"mcp-demo"}}"#);
        assert_eq!(
            check_headers(Some("prompts/get"), Some("mcp-demo"), &m),
            Ok(())
        );
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(check_headers(Some("tools/list"), None, &m), Ok(()));
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#);
        assert_eq!(check_headers(Some("server/discover"), None, &m), Ok(()));
        // Mcp-Name is optional for subscribe, but must match when sent.
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"a://b"}}"#,
        );
        assert_eq!(check_headers(Some("resources/subscribe"), None, &m), Ok(()));
        assert_eq!(
            check_headers(Some("resources/subscribe"), Some("a://b"), &m),
            Ok(())
        );
        assert!(check_headers(Some("resources/subscribe"), Some("a://c"), &m).is_err());
        // Notifications: headers optional, checked when present.
        let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(check_headers(None, None, &n), Ok(()));
        assert_eq!(
            check_headers(Some("notifications/initialized"), None, &n),
            Ok(())
        );
        assert!(check_headers(Some("notifications/cancelled"), None, &n).is_err());
        // Tab and space are legal header characters.
        let m = call("two words\tand a tab");
        assert_eq!(
            check_headers(Some("tools/call"), Some("two words\tand a tab"), &m),
            Ok(())
        );
    }

    #[test]
    fn headers_mismatch() {
        let m = call("read_query");
        assert_eq!(
            check_headers(None, Some("read_query"), &m),
            Err(HeaderMismatch::MissingMethod)
        );
        assert_eq!(
            check_headers(Some("tools/call"), None, &m),
            Err(HeaderMismatch::MissingName)
        );
        assert_eq!(
            check_headers(Some("tools/list"), Some("read_query"), &m),
            Err(HeaderMismatch::Method {
                header: "tools/list".into(),
                body: Some("tools/call".into())
            })
        );
        assert!(matches!(
            check_headers(Some("Tools/Call"), Some("read_query"), &m),
            Err(HeaderMismatch::Method { .. })
        ));
        assert_eq!(
            check_headers(Some("tools/call"), Some("write_query"), &m),
            Err(HeaderMismatch::Name {
                header: "write_query".into(),
                body: Some("read_query".into())
            })
        );
        assert!(check_headers(Some("tools/call"), Some("READ_QUERY"), &m).is_err());
        assert!(check_headers(Some("tools/call"), Some(""), &m).is_err());
        // A name on a message that names nothing.
        let list = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(
            check_headers(Some("tools/list"), Some("read_query"), &list),
            Err(HeaderMismatch::Name {
                header: "read_query".into(),
                body: None
            })
        );
        let e = check_headers(Some("tools/list"), Some("read_query"), &list).expect_err("mismatch");
        assert!(
            e.to_string().ends_with("does not match body value (none)"),
            "{e}"
        );
        // Responses carry no method.
        let r = one(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(check_headers(None, None, &r), Ok(()));
        assert!(matches!(
            check_headers(Some("tools/call"), None, &r),
            Err(HeaderMismatch::Method { body: None, .. })
        ));
        // Missing name on every method that requires it.
        let read = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"memo://insights"}}"#,
        );
        assert_eq!(
            check_headers(Some("resources/read"), None, &read),
            Err(HeaderMismatch::MissingName)
        );
        let prompt =
            one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#);
        assert_eq!(
            check_headers(Some("prompts/get"), None, &prompt),
            Err(HeaderMismatch::MissingName)
        );
    }

    #[test]
    fn headers_base64_form() {
        // The spec's own example.
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        let m = call("Hello, 世界");
        assert_eq!(
            check_headers(
                Some("tools/call"),
                Some("=?base64?SGVsbG8sIOS4lueVjA==?="),
                &m
            ),
            Ok(())
        );
        // Unpadded is accepted too.
        assert_eq!(
            check_headers(
                Some("tools/call"),
                Some("=?base64?SGVsbG8sIOS4lueVjA?="),
                &m
            ),
            Ok(())
        );
        // Decoded, but a different name.
        let other = call("Hello, world");
        assert!(matches!(
            check_headers(Some("tools/call"), Some("=?base64?SGVsbG8sIOS4lueVjA==?="), &other),
            Err(HeaderMismatch::Name { header, .. }) if header == "Hello, 世界"
        ));
        // A plain ASCII name may also be sent encoded.
        let m = call("read_query");
        assert_eq!(
            check_headers(Some("tools/call"), Some("=?base64?cmVhZF9xdWVyeQ==?="), &m),
            Ok(())
        );
        // A literal that looks like the sentinel travels encoded.
        let m = call("=?base64?literal?=");
        assert_eq!(
            check_headers(
                Some("tools/call"),
                Some("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
                &m
            ),
            Ok(())
        );
        assert!(check_headers(Some("tools/call"), Some("=?base64?literal?="), &m).is_err());
        // Leading/trailing spaces only survive encoded.
        let m = call(" padded ");
        assert_eq!(
            check_headers(Some("tools/call"), Some("=?base64?IHBhZGRlZCA=?="), &m),
            Ok(())
        );
        // Markers are case-sensitive: an uppercase form is compared as is.
        let m = call("read_query");
        assert!(matches!(
            check_headers(Some("tools/call"), Some("=?BASE64?cmVhZF9xdWVyeQ==?="), &m),
            Err(HeaderMismatch::Name { .. })
        ));
        // Too short to be a sentinel: a plain value.
        assert_eq!(
            decode_header_value("=?base64?=").as_deref(),
            Some("=?base64?=")
        );
        assert_eq!(decode_header_value("=?base64??=").as_deref(), Some(""));
        // Resource URIs too.
        let r = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///tmp/ü.txt"}}"#,
        );
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("file:///tmp/ü.txt")
        );
        assert_eq!(
            check_headers(Some("resources/read"), Some(&encoded), &r),
            Ok(())
        );
    }

    #[test]
    fn malformed_headers() {
        let m = call("read_query");
        for bad in [
            "=?base64?!!!?=",
            "=?base64?cmVhZF9xdWVyeQ=?=x?=",
            "=?base64?/w==?=",
        ] {
            assert_eq!(
                check_headers(Some("tools/call"), Some(bad), &m),
                Err(HeaderMismatch::Malformed {
                    header: MCP_NAME_HEADER,
                    reason: "not valid =?base64?…?= of UTF-8"
                }),
                "{bad}"
            );
        }
        // Raw non-ASCII or control characters are not header values.
        let m = call("héllo");
        assert!(matches!(
            check_headers(Some("tools/call"), Some("héllo"), &m),
            Err(HeaderMismatch::Malformed {
                header: MCP_NAME_HEADER,
                ..
            })
        ));
        assert!(matches!(
            check_headers(Some("tools/call\n"), Some("x"), &m),
            Err(HeaderMismatch::Malformed {
                header: MCP_METHOD_HEADER,
                ..
            })
        ));
    }

    #[test]
    fn header_mismatch_response() {
        let e = HeaderMismatch::Name {
            header: "foo".into(),
            body: Some("bar".into()),
        };
        assert_eq!(e.code(), -32020);
        assert_eq!(e.http_status(), http::StatusCode::BAD_REQUEST);
        let v = e.to_jsonrpc_error(Some(&json!(1)));
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":1,"error":{"code":-32020,
                "message":"Header mismatch: Mcp-Name header value \"foo\" does not match body value \"bar\""}})
        );
        assert_eq!(HeaderMismatch::MissingMethod.code(), -32020);
        // Long header values are cut in the message.
        let m = call("a");
        let long = "x".repeat(10_000);
        let e = check_headers(Some("tools/call"), Some(&long), &m).expect_err("mismatch");
        assert!(e.to_string().len() < 400);
    }
}
