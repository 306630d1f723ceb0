use super::*;
use futures::channel::mpsc;
use futures::SinkExt;
use http_body_util::StreamBody;
use policy::jsonrpc::classify_body;
use serde_json::json;

/// Hides the named tools.
struct Hide(Vec<String>);

impl ToolGate for Hide {
    fn filter(&mut self, kind: ListKind, items: &mut Vec<Value>) {
        items.retain(|t| {
            !self
                .0
                .iter()
                .any(|h| t.get(kind.key()).and_then(Value::as_str) == Some(h.as_str()))
        });
    }
}

fn hide(names: &[&str]) -> Hide {
    Hide(names.iter().map(|s| s.to_string()).collect())
}

fn watch(body: &str, names: &[&str], cap: usize) -> Watch<Hide> {
    let messages = classify_body(body.as_bytes()).unwrap();
    Watch::new(&messages, hide(names), cap).expect("a tools/list request")
}

fn response(content_type: &str, body: impl Into<Bytes>) -> Response<RespBody> {
    let body: Bytes = body.into();
    let mut resp = Response::new(full(body.clone()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

async fn read(resp: Response<RespBody>) -> (http::response::Parts, Bytes) {
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

fn list_result(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "tools": [
            {"name": "read_query", "inputSchema": {"type": "object"}},
            {"name": "write_query", "inputSchema": {"type": "object"}},
            {"name": "list_tables", "inputSchema": {"type": "object"}}
        ],
        "nextCursor": "page-2",
        "_meta": {"x": 1}
    }})
}

fn names(v: &Value) -> Vec<&str> {
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[test]
fn only_bodies_with_a_tools_list_request_are_watched() {
    let msgs =
        classify_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
            .unwrap();
    assert!(Watch::new(&msgs, hide(&[]), 100).is_none());
    let msgs = classify_body(br#"{"jsonrpc":"2.0","method":"tools/list"}"#).unwrap();
    assert!(
        Watch::new(&msgs, hide(&[]), 100).is_none(),
        "a notification has no answer"
    );
}

#[tokio::test]
async fn a_json_answer_is_filtered_and_keeps_its_other_members() {
    let w = watch(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
        &["write_query"],
        1 << 20,
    );
    let (parts, body) = read(
        w.filter(response(
            "application/json; charset=utf-8",
            list_result(json!(7)).to_string(),
        ))
        .await,
    )
    .await;
    assert_eq!(parts.status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&v), ["read_query", "list_tables"]);
    assert_eq!(v["result"]["nextCursor"], "page-2");
    assert_eq!(v["result"]["_meta"]["x"], 1);
    assert_eq!(v["id"], 7);
    assert_eq!(
        parts.headers[header::CONTENT_LENGTH],
        body.len().to_string().as_str(),
        "Content-Length is recomputed"
    );
}

#[tokio::test]
async fn in_a_batch_only_the_tools_list_answer_is_filtered() {
    let w = watch(
        r#"[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","id":"b","method":"ping"}]"#,
        &["write_query", "read_query"],
        1 << 20,
    );
    // The ping's answer happens to look like a list: not watched, untouched.
    let batch = json!([list_result(json!("b")), list_result(json!("a"))]);
    let (_, body) = read(
        w.filter(response("application/json", batch.to_string()))
            .await,
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&v[0]).len(), 3);
    assert_eq!(names(&v[1]), ["list_tables"]);
}

#[tokio::test]
async fn an_answer_with_nothing_to_remove_passes_byte_for_byte() {
    let original = format!("{}\n", list_result(json!(1)));
    let w = watch(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        &["other"],
        1 << 20,
    );
    let (_, body) = read(
        w.filter(response("application/json", original.clone()))
            .await,
    )
    .await;
    assert_eq!(body, original.as_bytes());
    // An error answer too.
    let err = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
    let w = watch(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        &["x"],
        1 << 20,
    );
    let (_, body) = read(w.filter(response("application/json", err)).await).await;
    assert_eq!(body, err.as_bytes());
}

#[tokio::test]
async fn resource_template_and_prompt_lists_are_filtered_and_fail_closed_too() {
    let body = r#"[{"jsonrpc":"2.0","id":1,"method":"resources/list"},
        {"jsonrpc":"2.0","id":2,"method":"resources/templates/list"},
        {"jsonrpc":"2.0","id":3,"method":"prompts/list"}]"#;
    let answer = json!([
        {"jsonrpc": "2.0", "id": 1, "result": {"resources": [
            {"uri": "memo://insights", "name": "memo"}, {"uri": "file:///etc/passwd", "name": "p"}]}},
        {"jsonrpc": "2.0", "id": 2, "result": {"resourceTemplates": [
            {"uriTemplate": "file:///{path}", "name": "files"}, {"uriTemplate": "memo://{x}"}]}},
        {"jsonrpc": "2.0", "id": 3, "result": {"prompts": [
            {"name": "mcp-demo"}, {"name": "secret"}], "nextCursor": "c"}}
    ]);
    let w = watch(
        body,
        &["file:///etc/passwd", "file:///{path}", "secret"],
        1 << 20,
    );
    let (_, out) = read(
        w.filter(response("application/json", answer.to_string()))
            .await,
    )
    .await;
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v[0]["result"]["resources"],
        json!([{"uri": "memo://insights", "name": "memo"}])
    );
    assert_eq!(
        v[1]["result"]["resourceTemplates"],
        json!([{"uriTemplate": "memo://{x}"}])
    );
    assert_eq!(
        v[2]["result"],
        json!({"prompts": [{"name": "mcp-demo"}], "nextCursor": "c"})
    );
    // An answer it cannot read is an error for each watched list.
    let w = watch(body, &[], 1 << 20);
    let (parts, out) = read(
        w.filter(response("application/json-rpc", answer.to_string()))
            .await,
    )
    .await;
    assert_eq!(parts.status, 502);
    let v: Value = serde_json::from_slice(&out).unwrap();
    for (i, method) in ["resources/list", "resources/templates/list", "prompts/list"]
        .iter()
        .enumerate()
    {
        assert_eq!(v[i]["error"]["code"], TOOLS_LIST_UNFILTERABLE);
        let message = v[i]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("filter this {method} answer")),
            "{message}"
        );
    }
    assert!(!out.windows(6).any(|w| w == b"secret"));
}

#[tokio::test]
async fn an_answer_over_the_cap_or_compressed_fails_closed() {
    let answer = list_result(json!(3)).to_string();
    let w = watch(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        &[],
        answer.len() - 1,
    );
    let (parts, body) = read(w.filter(response("application/json", answer.clone())).await).await;
    assert_eq!(parts.status, 502);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], TOOLS_LIST_UNFILTERABLE);
    assert!(!body.windows(10).any(|w| w == b"read_query"));
    // Exactly at the cap is fine.
    let w = watch(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        &[],
        answer.len(),
    );
    let (parts, _) = read(w.filter(response("application/json", answer.clone())).await).await;
    assert_eq!(parts.status, 200);

    let w = watch(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
        &[],
        1 << 20,
    );
    let mut resp = response("application/json", answer);
    resp.headers_mut()
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let (parts, body) = read(w.filter(resp).await).await;
    assert_eq!(parts.status, 502);
    assert!(String::from_utf8_lossy(&body).contains("compressed"));
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

fn sse_response(
    cap: usize,
    names: &[&str],
    request: &str,
) -> (Tx, impl std::future::Future<Output = Response<RespBody>>) {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1024);
    let mut resp = Response::new(StreamBody::new(rx).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    let w = watch(request, names, cap);
    (tx, w.filter(resp))
}

async fn next(body: &mut RespBody) -> Option<Bytes> {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("a frame in time")?;
    Some(frame.unwrap().into_data().unwrap())
}

#[tokio::test]
async fn sse_events_pass_one_by_one_and_the_answer_is_rewritten() {
    let (mut tx, resp) = sse_response(
        1 << 20,
        &["write_query"],
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
    );
    let mut body = resp.await.into_body();

    // An event that is not the answer goes out as soon as it is complete,
    // untouched, before anything else is sent.
    let progress = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\n";
    tx.send(Ok(Frame::data(Bytes::from(progress))))
        .await
        .unwrap();
    assert_eq!(next(&mut body).await.unwrap(), progress.as_bytes());
    let keepalive = ": keep-alive\n\n";
    tx.send(Ok(Frame::data(Bytes::from(keepalive))))
        .await
        .unwrap();
    assert_eq!(next(&mut body).await.unwrap(), keepalive.as_bytes());

    // The answer arrives in pieces, its data split over two lines.
    let answer = list_result(json!(5)).to_string();
    let (a, b) = answer.split_at(answer.find("\"result\"").unwrap());
    let event = format!("id: ev-9\nevent: message\ndata: {a}\ndata: {b}\n\n");
    for piece in event.as_bytes().chunks(7) {
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(piece))))
            .await
            .unwrap();
    }
    let out = next(&mut body).await.unwrap();
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        text.starts_with("id: ev-9\nevent: message\ndata: "),
        "{text}"
    );
    assert!(text.ends_with("\n\n"));
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(names(&v), ["read_query", "list_tables"]);
    assert_eq!(v["result"]["nextCursor"], "page-2");

    // After the answer, bytes pass as they come (even half an event).
    tx.send(Ok(Frame::data(Bytes::from_static(b"data: {\"half"))))
        .await
        .unwrap();
    assert_eq!(next(&mut body).await.unwrap(), &b"data: {\"half"[..]);
    drop(tx);
    assert!(next(&mut body).await.is_none());
}

#[tokio::test]
async fn an_sse_event_over_the_cap_fails_closed() {
    let (mut tx, resp) = sse_response(64, &[], r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    let mut body = resp.await.into_body();
    let small = "data: {}\n\n";
    tx.send(Ok(Frame::data(Bytes::from(small)))).await.unwrap();
    assert_eq!(next(&mut body).await.unwrap(), small.as_bytes());
    let big = format!("data: {}\n\n", list_result(json!(5)));
    tx.send(Ok(Frame::data(Bytes::from(big)))).await.unwrap();
    let out = next(&mut body).await.unwrap();
    let text = String::from_utf8(out.to_vec()).unwrap();
    let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["id"], 5);
    assert_eq!(v["error"]["code"], TOOLS_LIST_UNFILTERABLE);
    assert!(next(&mut body).await.is_none(), "the stream ends");
}

#[test]
fn refused_calls_get_the_error_that_fits() {
    let call = classify_body(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"write_query","arguments":{"query":"DELETE FROM t"}}}"#).unwrap();
    let m = &call[0];
    let denied = |p: &str| Decision {
        allowed: false,
        policies: vec![p.to_owned()],
        errors: Vec::new(),
    };
    // A tool the caller cannot see: unknown, and nothing names the policy.
    let e = refusal(m, &denied("org/no-writes"), "db", &|_| false);
    assert_eq!(e["id"], 4);
    assert_eq!(e["error"]["code"], INVALID_PARAMS);
    assert_eq!(e["error"]["message"], "Unknown tool: write_query");
    assert!(!e.to_string().contains("no-writes"));
    // A visible tool refused for what it is asked to do: the rule is named.
    let e = refusal(m, &denied("read-only-sql"), "db", &|_| true);
    assert_eq!(e["error"]["code"], POLICY_DENIED);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("read-only-sql"));
    // A changed tool: says so, and how to approve.
    let e = refusal(m, &denied(pins::PIN_CHANGED), "db", &|_| true);
    assert_eq!(e["error"]["code"], POLICY_DENIED);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("changed since it was approved")
            && msg.contains("relay tools approve --route db --tool write_query")
            && msg.contains("--accept-tool-changes"),
        "{msg}"
    );
    // Refused only because its batch was: not an unknown tool.
    let e = refusal(m, &denied(BATCH_REFUSED), "db", &|_| false);
    assert_eq!(e["error"]["code"], POLICY_DENIED);
    // Other methods keep the policy error.
    let list = classify_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    let e = refusal(&list[0], &denied("x"), "db", &|_| false);
    assert_eq!(e["error"]["code"], POLICY_DENIED);
}

/// The watched request's answer replaced by the unfilterable error.
async fn assert_unfilterable(resp: Response<RespBody>, why: &str) {
    let (parts, body) = read(resp).await;
    assert_eq!(parts.status, 502, "{why}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], 4, "{why}");
    assert_eq!(v["error"]["code"], TOOLS_LIST_UNFILTERABLE, "{why}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
    assert!(!body.windows(11).any(|w| w == b"write_query"), "{why}");
}

#[tokio::test]
async fn answers_the_relay_cannot_read_fail_closed() {
    const LIST: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#;
    let answer = list_result(json!(4)).to_string();
    let cases = [
        (
            "application/json-rpc",
            answer.clone(),
            "application/json-rpc",
        ),
        ("text/plain", answer.clone(), "text/plain"),
        ("", answer.clone(), "(none)"),
        ("application/json", format!("{answer}x"), "not JSON"),
        (
            "application/json",
            answer.replace("\"x\":1", "\"x\":1e400"),
            "not JSON",
        ),
        (
            "application/json",
            list_result(json!(99)).to_string(),
            "no answer to the tools/list",
        ),
    ];
    for (ct, body, why) in cases {
        let w = watch(LIST, &["write_query"], 1 << 20);
        let mut resp = response("application/json", body);
        if ct.is_empty() {
            resp.headers_mut().remove(header::CONTENT_TYPE);
        } else {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        assert_unfilterable(w.filter(resp).await, why).await;
    }
    // An empty answer of another type has nothing to hide.
    let w = watch(LIST, &["write_query"], 1 << 20);
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    let (parts, _) = read(w.filter(resp).await).await;
    assert_eq!(parts.status, 202);
    // The same number written another way is the same id.
    let w = watch(LIST, &["write_query"], 1 << 20);
    let float_id = answer.replacen("\"id\":4", "\"id\":4.0", 1);
    assert!(float_id.contains("4.0"));
    let (_, body) = read(w.filter(response("application/json", float_id)).await).await;
    assert!(!body.windows(11).any(|w| w == b"write_query"));
}

#[tokio::test]
async fn an_sse_event_that_does_not_parse_fails_closed() {
    for bad in [
        "data: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"write_query\",\"n\":1e400}]}}\n\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"write_query\"}]}}}\n\n",
        // Unfinished at the end of the stream, and not JSON.
        "data: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"tools\":[{\"name\":\"write_query\"}]",
    ] {
        let (mut tx, resp) = sse_response(
            1 << 20,
            &["write_query"],
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
        );
        let mut body = resp.await.into_body();
        // A priming event (empty data) passes.
        let priming = "id: 1\ndata:\n\n";
        tx.send(Ok(Frame::data(Bytes::from(priming)))).await.unwrap();
        assert_eq!(next(&mut body).await.unwrap(), priming.as_bytes());
        tx.send(Ok(Frame::data(Bytes::from(bad)))).await.unwrap();
        drop(tx);
        let out = next(&mut body).await.unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("write_query"), "{text}");
        let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["id"], 5);
        assert_eq!(v["error"]["code"], TOOLS_LIST_UNFILTERABLE);
        assert!(v["error"]["message"].as_str().unwrap().contains("not JSON"));
        assert!(next(&mut body).await.is_none(), "the stream ends");
    }
}
