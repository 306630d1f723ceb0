//! Phase 3: what the body says. An MCP client's JSON-RPC messages are read
//! whole (up to the cap) and classified one by one (method, target, SQL
//! facts); any other body is decided as a whole, and read only after the
//! decision (a small one whole, so that it can be sent again).

use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use policy::jsonrpc::{self, Message};
use policy::sql::{self, SqlFacts};
use protocol::BodyKind;

use super::decide::Body;
use super::Refusal;
use crate::agents::forward::{self, Upload};
use crate::gateway::trail::Trail;
use crate::http::body::BoxError;
use crate::http::content_type::is_json;
use crate::state::SharedState;

/// A request body, as far as the relay reads it before the decision.
pub enum Classified {
    /// JSON-RPC messages, read whole.
    Messages(Messages),
    /// Not read (an MCP GET stream or DELETE, a plain HTTP route's body);
    /// `None`: no body.
    Opaque(Option<Incoming>),
}

/// A JSON-RPC body, read and classified.
pub struct Messages {
    pub bytes: Bytes,
    pub messages: Vec<Message>,
    /// Each message's SQL facts, when it carries SQL.
    pub facts: Vec<Option<SqlFacts>>,
    /// When reading them started (the request's log line shows the time the
    /// relay spent classifying and deciding).
    pub since: Instant,
}

impl Classified {
    /// The body as the decision sees it.
    pub fn view(&self) -> Body<'_> {
        match self {
            Classified::Messages(m) => Body::JsonRpc {
                messages: &m.messages,
                facts: &m.facts,
            },
            Classified::Opaque(_) => Body::Opaque,
        }
    }
}

/// Reads and classifies an MCP route's JSON POST; leaves any other body
/// unread.
pub async fn classify(
    state: &SharedState,
    parts: &Parts,
    mcp: bool,
    body: Option<Incoming>,
    trail: &mut Trail,
) -> Result<Classified, Refusal> {
    let body = match body {
        Some(body)
            if mcp && is_json_post(parts) && !state.config.bench_disable_policy_and_audit =>
        {
            body
        }
        other => return Ok(Classified::Opaque(other)),
    };
    let read = tokio::time::timeout(
        state.config.body_read_timeout,
        Limited::new(body, state.config.max_body).collect(),
    )
    .await;
    let Ok(read) = read else {
        return Err(Refusal::BodyTimeout {
            wait: state.config.body_read_timeout,
            jsonrpc: true,
        });
    };
    let bytes = match read {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Refusal::BodyTooLarge {
                cap: state.config.max_body,
            });
        }
        Err(e) => return Err(Refusal::ClientAborted(e.to_string())),
    };
    trail.bytes_in = bytes.len() as u64;
    let since = Instant::now();
    let messages = jsonrpc::classify_body(&bytes).map_err(Refusal::Malformed)?;
    let facts: Vec<Option<SqlFacts>> = messages
        .iter()
        .map(|m| m.sql_argument().map(sql::classify))
        .collect();
    Ok(Classified::Messages(Messages {
        bytes,
        messages,
        facts,
        since,
    }))
}

/// A POST whose body is JSON: an MCP client's JSON-RPC message(s).
fn is_json_post(parts: &Parts) -> bool {
    parts.method == http::Method::POST && is_json(&parts.headers)
}

/// The body as the exchange carries it, once allowed: JSON-RPC messages as
/// read; nothing, or a small body of known length, read whole (the exchange
/// can then go to another replica if its agent turns out to be gone);
/// anything else streamed.
pub async fn upload(
    state: &SharedState,
    body: Classified,
    trail: &mut Trail,
) -> Result<(Upload, BodyKind), Refusal> {
    let body = match body {
        Classified::Messages(m) => {
            let len = m.bytes.len() as u64;
            let kind = if len == 0 {
                BodyKind::Empty
            } else {
                BodyKind::Length(len)
            };
            return Ok((Upload::Whole(m.bytes), kind));
        }
        Classified::Opaque(None) => return Ok((Upload::Whole(Bytes::new()), BodyKind::Empty)),
        Classified::Opaque(Some(body)) => body,
    };
    let kind = if body.is_end_stream() {
        BodyKind::Empty
    } else {
        match body.size_hint().exact() {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::Streaming,
        }
    };
    if let BodyKind::Length(n) = kind {
        trail.bytes_in = n;
    }
    match kind {
        BodyKind::Empty => Ok((Upload::Whole(Bytes::new()), kind)),
        BodyKind::Length(n) if n <= forward::RESENDABLE => {
            match tokio::time::timeout(state.config.body_read_timeout, body.collect()).await {
                Ok(Ok(read)) => Ok((Upload::Whole(read.to_bytes()), kind)),
                Ok(Err(e)) => Err(Refusal::ClientAborted(e.to_string())),
                Err(_) => Err(Refusal::BodyTimeout {
                    wait: state.config.body_read_timeout,
                    jsonrpc: false,
                }),
            }
        }
        _ => Ok((
            Upload::Streamed(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            kind,
        )),
    }
}
