//! A `tools/call` of the stateless 2026-07-28 revision, answered by the
//! built-in SQLite server directly instead of through rmcp's Streamable HTTP
//! transport.
//!
//! rmcp serves such a request by building a service for it: a task that runs
//! it, another that runs the handler, and channels between them and the
//! caller, then serializes the one answer. Here the same handler
//! ([`SqliteServer::call`]) runs on the exchange's own task and its answer is
//! serialized the way rmcp does, into the same bytes.
//!
//! Only a request that passes every check rmcp's transport makes, in the
//! way rmcp would let it pass, is answered here ([`recognize`]): its body is
//! read with rmcp's own message type, its headers must say exactly what the
//! body says, and the tool must exist. Anything else (a session, another
//! method, an older revision, anything rmcp would refuse or answer with an
//! error) is left to rmcp, which answers as it always has. The agent's own
//! policy check ([`crate::gate`]) has already decided the body either way.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use rmcp::model::{
    CallToolResponse, ClientJsonRpcMessage, ClientRequest, GetMeta, JsonObject, ProtocolVersion,
    RequestId, ServerJsonRpcMessage, ServerResult,
};

use crate::upstream::per_identity::CallerId;
use crate::upstream::sqlite::server::SqliteServer;

/// The revision whose requests carry their own protocol version and need no
/// session.
const REVISION: ProtocolVersion = ProtocolVersion::V_2026_07_28;

/// The largest body rmcp's transport reads (its default, which the agent
/// keeps); a larger one is left to rmcp to refuse.
const RMCP_MAX_BODY: usize = 4 * 1024 * 1024;

/// A tool call this path answers.
#[derive(Debug)]
pub struct StatelessCall {
    id: RequestId,
    name: String,
    arguments: JsonObject,
}

/// The tool call `headers` and `body` carry, if rmcp's transport would hand
/// it, unchanged, to the server's `call_tool`; `None` otherwise.
pub fn recognize(server: &SqliteServer, headers: &HeaderMap, body: &[u8]) -> Option<StatelessCall> {
    if body.len() > RMCP_MAX_BODY || !accepts_json_and_sse(headers) || !is_json(headers) {
        return None;
    }
    // The parse rmcp's transport makes: what it accepts, and how.
    let ClientJsonRpcMessage::Request(request) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    // A request of the revision with every `_meta` key it requires, and the
    // version header saying the same.
    let meta = request.request.get_meta();
    if meta.protocol_version()? != REVISION || !meta.missing_required_keys(&REVISION).is_empty() {
        return None;
    }
    let ClientRequest::CallToolRequest(call) = request.request else {
        return None;
    };
    let name = call.params.name.as_ref();
    if sole(headers, "mcp-protocol-version")? != REVISION.as_str()
        || sole(headers, "mcp-method")? != "tools/call"
        // A name header in Base64 (`=?base64?…?=`) is left to rmcp to decode.
        || sole(headers, "mcp-name")? != name
        || name.starts_with("=?")
        || !server.has_tool(name)
    {
        return None;
    }
    Some(StatelessCall {
        id: request.id,
        name: name.to_owned(),
        arguments: call.params.arguments.unwrap_or_default(),
    })
}

/// Runs `call` for `caller` and answers it as rmcp's transport would: the
/// JSON-RPC response as `application/json`.
pub async fn answer(
    server: &SqliteServer,
    call: StatelessCall,
    caller: Option<&CallerId>,
) -> Response<Full<Bytes>> {
    let message = match server.call(caller, &call.name, &call.arguments).await {
        Ok(result) => {
            let mut result = ServerResult::from(CallToolResponse::from(result));
            // What rmcp's handler does to every result of this revision.
            result.fill_missing_cache_hints();
            ServerJsonRpcMessage::response(result, call.id)
        }
        // Only an unknown tool, which `recognize` does not let through; rmcp
        // answers this code (invalid params, request well formed) with 200.
        Err(error) => ServerJsonRpcMessage::error(error, Some(call.id)),
    };
    match serde_json::to_vec(&message) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            // As rmcp does when an answer cannot be serialized.
            tracing::error!(error = %e, "serialize json response");
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "Internal Server Error: serialize json response: {e}"
            ))));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// The one value of header `name`, as text; `None` if absent, repeated or
/// not text.
fn sole<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether `Accept` names both `application/json` and `text/event-stream`
/// plainly (no parameters, no quoting), as rmcp requires. An `Accept` with
/// parameters is left to rmcp, which weighs them.
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains([';', '"']) {
            return false;
        }
        for essence in value.split(',').map(str::trim) {
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// rmcp's check of the (first) `Content-Type`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            let essence = h.split_once(';').map_or(h, |(essence, _)| essence);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::Request;
    use http_body_util::BodyExt as _;
    use serde_json::{json, Value};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::upstream::sqlite::db::SqliteDb;

    /// A server on a fresh copy of the demo database.
    fn server(dir: &std::path::Path, name: &str) -> SqliteServer {
        let db = SqliteDb::open(&dir.join(name), false, Default::default()).expect("open");
        SqliteServer::new(Arc::new(db))
    }

    fn meta() -> Value {
        json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        })
    }

    fn call_body(id: Value, name: &str, arguments: Option<Value>) -> String {
        let mut params = json!({"name": name, "_meta": meta()});
        if let Some(a) = arguments {
            params["arguments"] = a;
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
    }

    fn post(body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
        let mut req = Request::post("/").body(Full::new(Bytes::from(body.to_owned())));
        let req = req.as_mut().expect("request");
        for (n, v) in headers {
            req.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
        req.extensions_mut()
            .insert(CallerId("alice@example.com".into()));
        std::mem::replace(req, Request::new(Full::new(Bytes::new())))
    }

    /// A request's headers, by name.
    type Headers = Vec<(&'static str, String)>;

    fn standard(name: &str) -> Headers {
        vec![
            ("content-type", "application/json".into()),
            ("accept", "application/json, text/event-stream".into()),
            ("mcp-protocol-version", "2026-07-28".into()),
            ("mcp-method", "tools/call".into()),
            ("mcp-name", name.to_owned()),
        ]
    }

    /// Status, headers and body bytes of a response.
    async fn parts<B>(resp: Response<B>) -> (StatusCode, Vec<(String, Vec<u8>)>, Bytes)
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, headers, body)
    }

    /// Every call here, sent to one server through rmcp's transport and to
    /// a twin through this path, gets the same status, headers and bytes.
    #[tokio::test]
    async fn answers_are_the_bytes_rmcp_sends() {
        let dir =
            std::env::temp_dir().join(format!("drawbridge-stateless-call-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let through_rmcp = server(&dir, "a.db").into_http_service(CancellationToken::new());
        let direct = server(&dir, "b.db");
        let calls = [
            call_body(
                json!(1),
                "read_query",
                Some(json!({"query": "SELECT 1 AS one"})),
            ),
            call_body(
                json!("req-7"),
                "read_query",
                Some(json!({"query": "SELECT * FROM products ORDER BY id"})),
            ),
            call_body(
                json!(-3),
                "read_query",
                Some(json!({"query": "SELECT nope FROM nowhere"})),
            ),
            call_body(
                json!(2),
                "read_query",
                Some(json!({"query": "DELETE FROM orders"})),
            ),
            call_body(json!(3), "read_query", Some(json!({}))),
            call_body(json!(4), "list_tables", None),
            call_body(
                json!(5),
                "describe_table",
                Some(json!({"table_name": "products"})),
            ),
            call_body(
                json!(6),
                "append_insight",
                Some(json!({"insight": "Keyboards \"sell\" best ✓"})),
            ),
            call_body(
                json!(7),
                "write_query",
                Some(json!({"query": "UPDATE products SET name = name WHERE id = 1"})),
            ),
            call_body(
                json!(8),
                "create_table",
                Some(json!({"query": "CREATE TABLE t (x INTEGER)"})),
            ),
            call_body(json!(9), "list_tables", Some(json!({"ignored": [1, 2]}))),
            TOOLS_CALL_WITH_EXTRAS.to_owned(),
        ];
        for body in &calls {
            let name = serde_json::from_str::<Value>(body).expect("json")["params"]["name"]
                .as_str()
                .expect("name")
                .to_owned();
            let headers = standard(&name);
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let expected = parts(through_rmcp.handle(post(body, &headers)).await).await;
            let req = post(body, &headers);
            let call = recognize(&direct, req.headers(), body.as_bytes())
                .unwrap_or_else(|| panic!("not recognized: {body}"));
            let got = parts(answer(&direct, call, req.extensions().get::<CallerId>()).await).await;
            assert_eq!(
                (got.0, &got.1, String::from_utf8_lossy(&got.2)),
                (
                    expected.0,
                    &expected.1,
                    String::from_utf8_lossy(&expected.2)
                ),
                "{body}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A call with members rmcp reads but the tools do not use.
    const TOOLS_CALL_WITH_EXTRAS: &str = concat!(
        r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","extra":1,"params":{"name":"read_query","#,
        r#""arguments":{"query":"SELECT 2 AS two"},"requestState":"s","#,
        r#""_meta":{"progressToken":5,"io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
        r#""io.modelcontextprotocol/clientCapabilities":{"roots":{}}}}}"#
    );

    /// What rmcp would answer otherwise (or refuse) is left to it.
    #[test]
    fn anything_else_is_left_to_rmcp() {
        let dir = std::env::temp_dir().join(format!(
            "drawbridge-stateless-call-else-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let s = server(&dir, "c.db");
        let good = call_body(json!(1), "read_query", Some(json!({"query": "SELECT 1"})));
        let headers = standard("read_query");
        let with = |change: &dyn Fn(&mut Headers)| {
            let mut h = headers.clone();
            change(&mut h);
            let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
            post(&good, &h)
        };
        let recognized = |req: &Request<Full<Bytes>>, body: &str| {
            recognize(&s, req.headers(), body.as_bytes()).is_some()
        };
        assert!(recognized(&with(&|_| {}), &good), "the plain call");
        let refused_headers: [&dyn Fn(&mut Headers); 9] = [
            &|h| h.retain(|(n, _)| *n != "mcp-name"),
            &|h| h.retain(|(n, _)| *n != "mcp-method"),
            &|h| h.retain(|(n, _)| *n != "mcp-protocol-version"),
            &|h| h.push(("mcp-name", "read_query".into())),
            &|h| h[4].1 = "write_query".into(),
            &|h| h[2].1 = "2025-06-18".into(),
            &|h| h[1].1 = "application/json".into(),
            &|h| h[1].1 = "application/json, text/event-stream;q=0".into(),
            &|h| h[0].1 = "text/plain".into(),
        ];
        for (i, change) in refused_headers.iter().enumerate() {
            assert!(!recognized(&with(change), &good), "header case {i}");
        }
        let plain = with(&|_| {});
        for body in [
            call_body(json!(1), "drop_everything", None),
            call_body(json!(1.5), "read_query", None),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "read_query", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
            .to_string(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_query"}})
                .to_string(),
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "read_query", "_meta": meta()}})
                .to_string(),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}})
                .to_string(),
            "{not json".to_owned(),
        ] {
            assert!(!recognized(&plain, &body), "{body}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
