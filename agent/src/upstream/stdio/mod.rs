//! The stdio bridge (`agent connect -- CMD ARGS...`): MCP Streamable HTTP on
//! the tunnel's side, newline-delimited JSON-RPC on a child's stdin/stdout
//! on the other.
//!
//! * An `initialize` POST without `Mcp-Session-Id` starts a child of its own
//!   ([`child`]), forwards the handshake, and answers with a fresh random
//!   session id; later requests with that id go to that child.
//! * Stateless clients (2026-07-28: no initialize, no session) are served by
//!   one shared child the bridge initializes itself ([`stateless`]).
//! * Ids are rewritten towards the child ([`ids`]); answers are JSON or an
//!   event stream ([`answer`]); lines are capped ([`framing`]).
//! * DELETE or `--idle-timeout` stops a session's child; a crashed child is
//!   an error for whatever was waiting, and its session is gone.
//! * One identity holds at most `--max-sessions-per-identity` sessions, so
//!   that a caller cannot take every `--max-sessions` slot; a session that
//!   makes no request after its `initialize` is stopped after
//!   `--unused-session-timeout`.
//!
//! The child never sees HTTP: the relay's `Host` and forwarded headers do
//! not reach it.

pub mod answer;
pub mod child;
pub mod framing;
pub mod ids;
pub mod log_budget;
pub mod message;
pub mod orphan_guard;
pub mod stateless;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use answer::Body;
use child::{Child, CommandSpec, GRACE};
use message::{Kind, INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR};

use crate::upstream::per_identity::{CallerId, PerIdentity};

/// The largest request body the bridge reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
const SESSION_HEADER: &str = "mcp-session-id";

type Sessions = Arc<Mutex<HashMap<String, Arc<Child>>>>;

/// How many children a route may have, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct StdioLimits {
    /// A session's child is stopped after this long without requests (an
    /// open GET stream counts as activity).
    pub idle_timeout: Duration,
    /// The most sessions (each a child) at once.
    pub max_sessions: usize,
    /// The most sessions one identity may hold at once.
    pub max_sessions_per_identity: usize,
    /// A session that makes no request after its `initialize` is stopped
    /// after this long.
    pub unused_timeout: Duration,
}

struct Shared {
    child: Arc<Child>,
    /// The child's `initialize` result.
    init: Value,
}

/// A route served by a stdio MCP server, one child per MCP session.
pub struct StdioUpstream {
    spec: CommandSpec,
    route: String,
    idle_timeout: Duration,
    unused_timeout: Duration,
    max_sessions: usize,
    per_identity: Arc<PerIdentity>,
    sessions: Sessions,
    shared: Arc<tokio::sync::Mutex<Option<Shared>>>,
}

impl std::fmt::Debug for StdioUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioUpstream")
            .field("command", &self.spec.display())
            .field("route", &self.route)
            .finish()
    }
}

/// Stops a child when dropped unless disarmed: a handshake abandoned
/// half-way leaves no process behind.
struct StopOnDrop(Option<Arc<Child>>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.stop();
        }
    }
}

impl StdioUpstream {
    /// Serves `route` from `program args...`; a session's child is stopped
    /// after `limits.idle_timeout` without requests.
    pub fn new(
        program: String,
        args: Vec<String>,
        route: &str,
        limits: StdioLimits,
    ) -> StdioUpstream {
        StdioUpstream {
            spec: CommandSpec { program, args },
            route: route.to_owned(),
            idle_timeout: limits.idle_timeout,
            unused_timeout: limits.unused_timeout,
            max_sessions: limits.max_sessions,
            per_identity: PerIdentity::new(limits.max_sessions_per_identity.max(1)),
            sessions: Arc::default(),
            shared: Arc::default(),
        }
    }

    /// Checks that the program can be found (an existing file, or on
    /// `PATH`), so that a typo is an error at start rather than on the
    /// first request.
    pub fn check_command(&self) -> Result<(), String> {
        find_program(&self.spec.program, std::env::var_os("PATH").as_deref())
            .map(|_| ())
            .ok_or_else(|| {
                format!(
                    "cannot find the stdio MCP server's program `{}` (not a file, and not on PATH)",
                    self.spec.program
                )
            })
    }

    /// Answers one HTTP request to the route's MCP endpoint.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse_ok = accepts_sse(req.headers());
        let caller = CallerId::of(&req).cloned();
        match *req.method() {
            Method::POST => self.post(req.into_body(), session, sse_ok, caller).await,
            Method::GET => self.get(session, sse_ok),
            Method::DELETE => self.delete(session).await,
            _ => method_not_allowed(),
        }
    }

    async fn post<B>(
        &self,
        body: B,
        session: Option<String>,
        sse_ok: bool,
        caller: Option<CallerId>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return answer::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Value::Null,
                    INVALID_REQUEST,
                    &format!("the request body exceeds {MAX_BODY} bytes"),
                )
            }
            Err(e) => {
                return answer::error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    INVALID_REQUEST,
                    &format!("could not read the request body: {e}"),
                )
            }
        };
        let msg: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return answer::error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    PARSE_ERROR,
                    &format!("the body is not JSON: {e}"),
                )
            }
        };
        if msg.is_array() {
            return answer::error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "the stdio bridge takes one JSON-RPC message per request, not a batch",
            );
        }
        let kind = message::kind(&msg);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        if kind == Kind::Invalid {
            return answer::error(
                StatusCode::BAD_REQUEST,
                id,
                INVALID_REQUEST,
                "not a JSON-RPC request, notification or response",
            );
        }
        if kind == Kind::Request && message::method(&msg) == Some("initialize") {
            return self.initialize(msg, caller).await;
        }
        let child = match session {
            Some(sid) => match self.session(&sid) {
                Some(c) => {
                    if kind == Kind::Request {
                        c.mark_used();
                    }
                    c
                }
                None => return unknown_session(id),
            },
            None if kind == Kind::Request => {
                let (child, init) = match self.shared_child().await {
                    Ok(s) => s,
                    Err(e) => {
                        return answer::json(
                            StatusCode::OK,
                            &message::error(id, INTERNAL_ERROR, &e),
                        )
                    }
                };
                if message::method(&msg) == Some("server/discover") {
                    let result = stateless::result(&init);
                    return answer::json(
                        StatusCode::OK,
                        &serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    );
                }
                child
            }
            None => {
                // A stateless client's notification: for the shared child, if any.
                let shared = self.shared.lock().await.as_ref().map(|s| s.child.clone());
                match shared {
                    Some(c) => c,
                    None => return answer::empty(StatusCode::ACCEPTED),
                }
            }
        };
        if kind == Kind::Request {
            return match child.request(msg, sse_ok).await {
                Ok(waiting) => answer::request(waiting, sse_ok).await,
                Err(e) => answer::json(StatusCode::OK, &e),
            };
        }
        if let Err(e) = child.send(msg).await {
            tracing::warn!(route = self.route, pid = child.pid, "{e}");
        }
        answer::empty(StatusCode::ACCEPTED)
    }

    /// A new session for `caller`: its own child, initialized by the client.
    async fn initialize(&self, msg: Value, caller: Option<CallerId>) -> Response<Body> {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        // Held for as long as the session's child lives.
        let slot = match caller.map(|c| self.per_identity.acquire(&c.0)).transpose() {
            Ok(slot) => slot,
            Err(held) => {
                tracing::info!(
                    route = self.route,
                    held,
                    "initialize refused: the caller holds --max-sessions-per-identity sessions"
                );
                return answer::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    id,
                    INTERNAL_ERROR,
                    &format!(
                        "you already have {held} MCP sessions on this route, each with its own process (the agent's bound, --max-sessions-per-identity): end one (DELETE) or wait for one to go idle"
                    ),
                );
            }
        };
        let open = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if open >= self.max_sessions {
            return answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                INTERNAL_ERROR,
                &format!(
                    "this route already has {} MCP sessions, each with its own process; end one (DELETE) or wait for one to go idle",
                    self.max_sessions
                ),
            );
        }
        let child = match Child::spawn(&self.spec, &self.route, false) {
            Ok(c) => c,
            Err(e) => return answer::json(StatusCode::OK, &message::error(id, INTERNAL_ERROR, &e)),
        };
        let guard = StopOnDrop(Some(child.clone()));
        let resp = match child.request(msg, false).await {
            Ok(waiting) => response_of(waiting).await,
            Err(e) => e,
        };
        if resp.get("result").is_none() {
            // A refused handshake (or a child that died) makes no session.
            return answer::json(StatusCode::OK, &resp);
        }
        let Some(sid) = new_session_id() else {
            return answer::json(
                StatusCode::OK,
                &message::error(id, INTERNAL_ERROR, "the system random generator failed"),
            );
        };
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid.clone(), child.clone());
        guard.disarm();
        tracing::info!(
            route = self.route,
            pid = child.pid,
            session = &sid[..8],
            "new MCP session"
        );
        let sessions = self.sessions.clone();
        let key = sid.clone();
        let watched = child.clone();
        tokio::spawn(stop_if_unused(child.clone(), self.unused_timeout));
        tokio::spawn(watch(child, self.idle_timeout, async move {
            let mut s = sessions.lock().unwrap_or_else(|p| p.into_inner());
            if s.get(&key).is_some_and(|c| Arc::ptr_eq(c, &watched)) {
                s.remove(&key);
            }
            drop(slot);
        }));
        let mut r = answer::json(StatusCode::OK, &resp);
        if let Ok(v) = HeaderValue::from_str(&sid) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        r
    }

    /// The live child of session `sid`.
    fn session(&self, sid: &str) -> Option<Arc<Child>> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let child = s.get(sid)?.clone();
        if child.is_ended() {
            s.remove(sid);
            return None;
        }
        Some(child)
    }

    /// The shared child of stateless clients and its initialize result,
    /// started and initialized by the bridge when there is none (or the
    /// last one ended).
    async fn shared_child(&self) -> Result<(Arc<Child>, Value), String> {
        let mut slot = self.shared.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.child.is_ended()) {
            return Ok((s.child.clone(), s.init.clone()));
        }
        let child = Child::spawn(&self.spec, &self.route, true)?;
        let guard = StopOnDrop(Some(child.clone()));
        let resp = match child.request(stateless::initialize_request(), false).await {
            Ok(waiting) => response_of(waiting).await,
            Err(e) => e,
        };
        let init = match (resp.get("result"), resp.get("error")) {
            (Some(r), _) => r.clone(),
            (None, e) => {
                let e = e.map(|e| e["message"].to_string()).unwrap_or_default();
                return Err(format!(
                    "the stdio MCP server {} did not accept initialize: {e}",
                    child.describe()
                ));
            }
        };
        child.send(stateless::initialized_notification()).await?;
        guard.disarm();
        tracing::info!(
            route = self.route,
            pid = child.pid,
            "shared child for stateless clients initialized"
        );
        let shared = self.shared.clone();
        let watched = child.clone();
        tokio::spawn(watch(child.clone(), self.idle_timeout, async move {
            let mut s = shared.lock().await;
            if s.as_ref().is_some_and(|s| Arc::ptr_eq(&s.child, &watched)) {
                *s = None;
            }
        }));
        *slot = Some(Shared {
            child: child.clone(),
            init: init.clone(),
        });
        Ok((child, init))
    }

    fn get(&self, session: Option<String>, sse_ok: bool) -> Response<Body> {
        if !sse_ok {
            return answer::error(
                StatusCode::NOT_ACCEPTABLE,
                Value::Null,
                INVALID_REQUEST,
                "the GET stream needs Accept: text/event-stream",
            );
        }
        let Some(sid) = session else {
            return method_not_allowed();
        };
        let Some(child) = self.session(&sid) else {
            return unknown_session(Value::Null);
        };
        match child.open_stream() {
            Some(rx) => answer::server_stream(rx),
            None => answer::error(
                StatusCode::CONFLICT,
                Value::Null,
                INVALID_REQUEST,
                "this session already has a GET stream open",
            ),
        }
    }

    async fn delete(&self, session: Option<String>) -> Response<Body> {
        let Some(sid) = session else {
            return answer::error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                INVALID_REQUEST,
                "DELETE needs the Mcp-Session-Id of the session to end",
            );
        };
        let child = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sid);
        let Some(child) = child.filter(|c| !c.is_ended()) else {
            return unknown_session(Value::Null);
        };
        tracing::info!(
            route = self.route,
            pid = child.pid,
            session = &sid[..sid.len().min(8)],
            "session ended by the client"
        );
        child.stop();
        let _ = tokio::time::timeout(GRACE * 3, child.ended()).await;
        answer::empty(StatusCode::OK)
    }

    /// Stops every child and waits for them (the agent is leaving).
    pub async fn shutdown(&self) {
        let mut children: Vec<Arc<Child>> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        if let Some(s) = self.shared.lock().await.take() {
            children.push(s.child);
        }
        for c in &children {
            c.stop();
        }
        let all = futures::future::join_all(children.iter().map(|c| c.ended()));
        let _ = tokio::time::timeout(GRACE * 3, all).await;
    }
}

/// The response of `waiting`, skipping whatever else comes first.
async fn response_of(mut waiting: child::Waiting) -> Value {
    while let Some(msg) = waiting.rx.recv().await {
        if message::kind(&msg) == Kind::Response {
            waiting.done();
            return msg;
        }
    }
    message::error(
        Value::Null,
        INTERNAL_ERROR,
        "the stdio MCP server ended without answering",
    )
}

/// Stops `child` once it has been idle for `idle`; runs `on_end` once it
/// has ended, however that happened.
async fn watch(child: Arc<Child>, idle: Duration, on_end: impl std::future::Future<Output = ()>) {
    loop {
        let wake = match child.idle_since() {
            Some(since) => since + idle,
            None => tokio::time::Instant::now() + idle,
        };
        tokio::select! {
            _ = child.ended() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
        if child
            .idle_since()
            .is_some_and(|since| since.elapsed() >= idle)
        {
            tracing::info!(
                pid = child.pid,
                "child idle for {}; stopping it",
                humantime::format_duration(idle)
            );
            child.stop();
            child.ended().await;
            break;
        }
    }
    on_end.await;
}

/// Stops `child` if its session has made no request `unused` after its
/// `initialize`: a caller cannot hold a slot (and a process) by opening
/// sessions it never uses.
async fn stop_if_unused(child: Arc<Child>, unused: Duration) {
    tokio::select! {
        _ = child.ended() => {}
        _ = tokio::time::sleep(unused) => {
            if !child.is_used() {
                tracing::info!(
                    pid = child.pid,
                    "session made no request in {} after initialize (--unused-session-timeout); stopping its child",
                    humantime::format_duration(unused)
                );
                child.stop();
            }
        }
    }
}

/// Where `program` is: itself if it names a path, else the first file of
/// that name in `path` (a `PATH` value).
fn find_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<std::path::PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains(std::path::MAIN_SEPARATOR) {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn accepts_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

fn unknown_session(id: Value) -> Response<Body> {
    answer::error(
        StatusCode::NOT_FOUND,
        id,
        INVALID_REQUEST,
        "unknown or ended MCP session: initialize a new one",
    )
}

fn method_not_allowed() -> Response<Body> {
    let mut r = answer::error(
        StatusCode::METHOD_NOT_ALLOWED,
        Value::Null,
        INVALID_REQUEST,
        "use POST, GET with an Mcp-Session-Id, or DELETE with an Mcp-Session-Id",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    r
}

/// A fresh session id: 128 random bits, hex (visible ASCII). `None` if
/// the system's random generator fails: a guessable id is never made.
fn new_session_id() -> Option<String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut id = [0u8; 16];
    SystemRandom::new().fill(&mut id).ok()?;
    Some(hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_or_as_files() {
        let dir = std::env::temp_dir().join(format!("drawbridge-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let exe = dir.join("my-server");
        std::fs::write(&exe, "").expect("file");
        let path =
            std::env::join_paths([std::path::Path::new("/nonexistent"), &dir]).expect("path");
        assert_eq!(find_program("my-server", Some(&path)), Some(exe.clone()));
        assert_eq!(
            find_program(exe.to_str().expect("utf-8"), None),
            Some(exe.clone())
        );
        assert_eq!(find_program("no-such-server", Some(&path)), None);
        assert_eq!(find_program("my-server", None), None);
        assert_eq!(find_program("", Some(&path)), None);
        assert_eq!(
            find_program(dir.to_str().expect("utf-8"), None),
            None,
            "a directory"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn session_ids_are_fresh_visible_ascii() {
        let a = new_session_id().expect("id");
        let b = new_session_id().expect("id");
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }
}
