//! HTTP answers of the bridge: a JSON-RPC message as `application/json`, a
//! request's messages as a `text/event-stream`, and the bridge's own errors.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use super::child::Waiting;
use super::message::{self, Kind};

/// Every response body of the bridge.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// `msg` as an `application/json` response.
pub fn json(status: StatusCode, msg: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(msg.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON-RPC error produced by the bridge, with an HTTP status.
pub fn error(status: StatusCode, id: Value, code: i64, text: &str) -> Response<Body> {
    json(status, &message::error(id, code, text))
}

/// An empty response (`202 Accepted` for notifications, `200` for DELETE).
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

/// One server-sent event carrying `msg`.
fn event(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

fn sse(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Waits for the child's answer to a request. If its response comes first,
/// it is the JSON answer. If other messages come first (progress, logging,
/// a request of the server) and the client takes `text/event-stream`, the
/// answer becomes a stream of each message as it comes, ending after the
/// response; a client that does not take streams gets only the response.
pub async fn request(mut waiting: Waiting, sse_ok: bool) -> Response<Body> {
    loop {
        let Some(first) = waiting.rx.recv().await else {
            waiting.done();
            return error(
                StatusCode::OK,
                Value::Null,
                message::INTERNAL_ERROR,
                "the stdio MCP server ended without answering",
            );
        };
        if message::kind(&first) == Kind::Response {
            waiting.done();
            return json(StatusCode::OK, &first);
        }
        if sse_ok {
            return sse(request_stream(first, waiting));
        }
        tracing::debug!(
            "the client takes no event stream; a message before the response is not sent"
        );
    }
}

/// The event stream of one request: `first`, then each message until the
/// response.
fn request_stream(first: Value, waiting: Waiting) -> Body {
    let start = futures::stream::iter([Ok::<_, Infallible>(Frame::data(event(&first)))]);
    let rest = futures::stream::unfold(Some(waiting), |state| async move {
        let mut waiting = state?;
        let msg = waiting.rx.recv().await?;
        let bytes = event(&msg);
        if message::kind(&msg) == Kind::Response {
            waiting.done();
            Some((Ok(Frame::data(bytes)), None))
        } else {
            Some((Ok(Frame::data(bytes)), Some(waiting)))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(start.chain(rest)))
}

/// The GET stream of a session: each message the child sends that belongs
/// to no request, until the child ends or the client goes away.
pub fn server_stream(rx: mpsc::Receiver<Value>) -> Response<Body> {
    let open = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
        b": stream open\n\n",
    )))]);
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let msg = rx.recv().await?;
        Some((Ok(Frame::data(event(&msg))), rx))
    });
    sse(BodyExt::boxed_unsync(StreamBody::new(open.chain(events))))
}
