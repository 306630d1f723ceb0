//! One exchange with a local server, whatever kind: the relay's
//! [`ExchangeHead`] and body become an `http::Request`, and the answer goes
//! back down the tunnel as a [`ResponseHead`] frame and the body, chunk by
//! chunk as it comes; or the agent answers with an error of its own.

use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use protocol::{BodyKind, ExchangeHead, FrameLimit, Header, ResponseHead};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tunnel::SendHalf;

use crate::inspector::Tap;
use crate::upstream::per_identity::CallerId;
use crate::upstream::response_cap::{CapCounter, ResponseCap};

/// A request body as the local server gets it.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Headers never forwarded to or from the local server: the hop-by-hop ones,
/// and `Host` (the local server gets its own).
pub(super) fn is_local_hop(name: &str) -> bool {
    name == "host" || common::headers::HOP_BY_HOP.contains(&name)
}

/// The request for `head` with `body`, addressed to `uri`.
pub(super) fn request(
    head: &ExchangeHead,
    body: ReqBody,
    uri: &str,
) -> Result<Request<ReqBody>, (StatusCode, &'static str, &'static str)> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad_method", "invalid method"))?;
    *req.uri_mut() = uri
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad_path", "invalid path"))?;
    for h in &head.headers {
        if is_local_hop(&h.name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    if head.body == BodyKind::Empty {
        req.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    // Who asks, for the bounds per caller of the MCP servers the agent runs.
    req.extensions_mut()
        .insert(CallerId(head.identity.subject.clone()));
    Ok(req)
}

/// Streams `resp` into `send`: the head frame, then each body chunk as it
/// comes, flushed. Ends early, cleanly, when `end_early` is cancelled. On a
/// body error it returns with `send` unfinished: dropping it aborts the
/// stream, so the client sees an error rather than a body that looks
/// complete.
pub(super) async fn send_response<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    end_early: Option<&CancellationToken>,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    stream_response(request_id, send, resp, end_early, ResponseCap::None, tap).await
}

/// [`send_response`] within `cap`: a body that goes over it is cut off (the
/// stream aborted, so the client sees an error) and no more of it is read.
pub(super) async fn send_capped<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    cap: ResponseCap,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    stream_response(request_id, send, resp, None, cap, tap).await
}

async fn stream_response<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    end_early: Option<&CancellationToken>,
    cap: ResponseCap,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let mut counter = CapCounter::new(cap);
    let (parts, mut body) = resp.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| !is_local_hop(n.as_str()))
        .map(|(n, v)| Header {
            name: n.as_str().to_owned(),
            value: v.as_bytes().to_vec(),
        })
        .collect();
    let mut headers: Vec<Header> = headers;
    if let Some(word) = tap.and_then(Tap::approval) {
        headers.push(Header {
            name: protocol::APPROVAL_HEADER.into(),
            value: word.into_bytes(),
        });
    }
    let head_frame = ResponseHead {
        status: parts.status.as_u16(),
        headers,
    };
    if let Some(tap) = tap {
        tap.status(head_frame.status);
    }
    let mut out = BytesMut::new();
    if protocol::encode_frame("response", &head_frame, FrameLimit::HEAD, &mut out).is_err() {
        return;
    }
    // The head goes out with as much of the body as is ready now, and with
    // the end of the stream if that was all of it: one write, so a small
    // answer leaves in one packet. A body not ready yet (an event stream)
    // does not hold the head back.
    let mut ended = false;
    while out.len() < COALESCE {
        let polled = Pin::new(&mut body).poll_frame(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Pending => break,
            Poll::Ready(None) => {
                ended = true;
                break;
            }
            Poll::Ready(Some(Ok(f))) => {
                if let Ok(data) = f.into_data() {
                    if !counter.admit(&data) {
                        tracing::warn!(
                            request_id,
                            ?cap,
                            "the local server's answer went over --max-response; cutting it off"
                        );
                        // The head, then an aborted stream (as below).
                        let _ = send.write_all(&out).await;
                        return;
                    }
                    if let Some(tap) = tap {
                        tap.response_chunk(&data);
                    }
                    out.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(request_id, error = %e, "the upstream's response body failed");
                let _ = send.write_all(&out).await;
                return;
            }
        }
    }
    if send.write_all(&out).await.is_err() || send.flush().await.is_err() {
        return;
    }
    if ended {
        let _ = send.finish_acknowledged(crate::reply::ACK_WAIT).await;
        return;
    }
    let never = CancellationToken::new();
    let end_early = end_early.unwrap_or(&never);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = end_early.cancelled() => break,
        };
        match frame {
            None => break,
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if !counter.admit(&data) {
                        tracing::warn!(
                            request_id,
                            ?cap,
                            "the local server's answer went over --max-response; cutting it off"
                        );
                        return;
                    }
                    if let Some(tap) = tap {
                        tap.response_chunk(&data);
                    }
                    if send.write_all(&data).await.is_err() {
                        return;
                    }
                    // Flush per chunk: an SSE event must not wait for the next one.
                    if send.flush().await.is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(request_id, error = %e, "the upstream's response body failed");
                return;
            }
        }
    }
    // Wait for the relay's acknowledgement: an agent that stops closes its
    // connection once this task ends, and must not discard the tail.
    let _ = send.finish_acknowledged(crate::reply::ACK_WAIT).await;
}

/// What of a response body is written with its head at most (whatever of it
/// is ready at once).
const COALESCE: usize = 64 * 1024;

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Answers the exchange with an error produced by the agent itself.
pub(super) async fn reply_error(
    send: &mut SendHalf,
    status: StatusCode,
    code: &str,
    message: &str,
    tap: Option<&Tap>,
) {
    let body = serde_json::json!({ "error": code, "message": message });
    if let Some(tap) = tap {
        tap.status(status.as_u16());
        tap.response_chunk(body.to_string().as_bytes());
    }
    crate::reply::json(send, status, &body).await;
}
