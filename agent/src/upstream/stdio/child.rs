//! One stdio MCP server process: spawned, spoken to line by line, its
//! stderr logged, stopped and always reaped.
//!
//! A supervisor task owns the process. It reads the child's stdout and
//! routes each message: a response to the request it answers (ids are
//! rewritten both ways, see [`super::ids`]), a progress notification to the
//! request whose token it carries, anything else to the one request in
//! flight (if its client takes a stream) or to the session's GET stream,
//! else it is logged and dropped. When the child ends (it exits, closes its
//! stdout, writes an oversized line, or is stopped), every request still
//! waiting gets a JSON-RPC error naming the command and how it ended, and
//! the process is waited for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::framing::{self, FramingError, LineReader, MAX_LINE};
use super::ids::IdMap;
use super::log_budget::LogBudget;
use super::message::{self, Kind, INTERNAL_ERROR, METHOD_NOT_FOUND};
use super::stateless;

/// How long a child gets to exit by itself once its stdin is closed.
pub const GRACE: Duration = Duration::from_secs(2);
/// The longest stderr line logged as one line.
const MAX_STDERR_LINE: usize = 64 * 1024;
/// Messages buffered per waiting request before the child is held back.
const SINK_DEPTH: usize = 64;

/// The command that runs a stdio MCP server.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandSpec {
    /// The command line, for messages.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where the answer to one request goes.
#[derive(Debug)]
pub struct Sink {
    tx: mpsc::Sender<Value>,
    /// The client accepts `text/event-stream`: messages other than the
    /// response may be sent to it.
    sse: bool,
    /// For a stateless client: the request's method, whose result is
    /// completed for 2026-07-28 ([`stateless::adapt_result`]).
    stateless_method: Option<String>,
}

struct State {
    ids: IdMap<Sink>,
    get_stream: Option<mpsc::Sender<Value>>,
    /// Why the child ended (set once it is ending).
    end: Option<String>,
    last_used: Instant,
}

/// A running stdio MCP server.
pub struct Child {
    pub pid: u32,
    label: String,
    route: String,
    /// A shared child serves stateless clients: only responses and progress
    /// reach them, never another caller's messages.
    shared: bool,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    state: Mutex<State>,
    stop: CancellationToken,
    ended: CancellationToken,
    /// Its session made a request after `initialize`.
    used: AtomicBool,
    /// Log lines its junk on stdout may still cause.
    junk_log: Mutex<LogBudget>,
}

/// What to do with a message from the child.
enum Action {
    Deliver(mpsc::Sender<Value>, Value),
    ReplyToChild(Value),
    Drop(&'static str, Value),
}

impl Child {
    /// Starts `spec` for `route`.
    pub fn spawn(spec: &CommandSpec, route: &str, shared: bool) -> Result<Arc<Child>, String> {
        let label = spec.display();
        let mut proc = super::orphan_guard::command(&spec.program, &spec.args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the stdio MCP server `{label}`: {e}"))?;
        let pid = proc.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            let _ = proc.start_kill();
            tokio::spawn(async move { proc.wait().await });
            return Err(format!("the stdio MCP server `{label}` has no pipes"));
        };
        tracing::info!(route, pid, command = %label, shared, "started child pid={pid}");
        let child = Arc::new(Child {
            pid,
            label,
            route: route.to_owned(),
            shared,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            state: Mutex::new(State {
                ids: IdMap::default(),
                get_stream: None,
                end: None,
                last_used: Instant::now(),
            }),
            stop: CancellationToken::new(),
            ended: CancellationToken::new(),
            used: AtomicBool::new(false),
            junk_log: Mutex::new(LogBudget::default()),
        });
        tokio::spawn(log_stderr(stderr, route.to_owned(), pid));
        tokio::spawn(supervise(child.clone(), proc, stdout));
        Ok(child)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The command line and pid, for messages.
    pub fn describe(&self) -> String {
        format!("`{}` (pid {})", self.label, self.pid)
    }

    /// Sends the request `msg` (its id and progress token rewritten); the
    /// answer and related messages arrive on the returned [`Waiting`]. On
    /// failure, the JSON-RPC error response to give the client.
    pub async fn request(self: &Arc<Self>, mut msg: Value, sse: bool) -> Result<Waiting, Value> {
        let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
        let stateless_method = self
            .shared
            .then(|| message::method(&msg).map(str::to_owned))
            .flatten();
        let (tx, rx) = mpsc::channel(SINK_DEPTH);
        let bridge_id = {
            let mut st = self.state();
            if let Some(why) = &st.end {
                return Err(message::error(client_id, INTERNAL_ERROR, why));
            }
            st.last_used = Instant::now();
            st.ids.register(
                &mut msg,
                Sink {
                    tx,
                    sse,
                    stateless_method,
                },
            )
        };
        let mut waiting = Waiting {
            rx,
            child: self.clone(),
            bridge_id,
            done: false,
        };
        if let Err(e) = self.write(&msg).await {
            // Most likely the child is dying: its supervisor then answers
            // with how it ended. Otherwise answer with the write error.
            let _ = tokio::time::timeout(GRACE * 2, self.ended.cancelled()).await;
            if self.state().ids.remove(bridge_id).is_some() {
                waiting.done = true;
                return Err(message::error(
                    client_id,
                    INTERNAL_ERROR,
                    &format!(
                        "cannot write to the stdio MCP server {}: {e}",
                        self.describe()
                    ),
                ));
            }
        }
        Ok(waiting)
    }

    /// Writes a client's notification or response. A cancellation names the
    /// request by the client's id: it is rewritten to the bridge's, or not
    /// sent when no request of this child has that id.
    pub async fn send(&self, mut msg: Value) -> Result<(), String> {
        if message::method(&msg) == Some("notifications/cancelled") {
            let Some(client_id) = msg.get("params").and_then(|p| p.get("requestId")) else {
                return Ok(());
            };
            let Some(bridge_id) = self.state().ids.bridge_id_of(client_id) else {
                tracing::debug!(
                    route = self.route,
                    pid = self.pid,
                    "a cancellation for no request in flight; not forwarded"
                );
                return Ok(());
            };
            msg["params"]["requestId"] = Value::from(bridge_id);
        } else if self.shared && message::kind(&msg) == Kind::Response {
            // The shared child never sends requests to clients.
            return Ok(());
        }
        self.state().last_used = Instant::now();
        self.write(&msg).await.map_err(|e| {
            format!(
                "cannot write to the stdio MCP server {}: {e}",
                self.describe()
            )
        })
    }

    async fn write(&self, msg: &Value) -> std::io::Result<()> {
        let line = framing::encode(msg);
        let mut stdin = self.stdin.lock().await;
        let Some(w) = stdin.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "its stdin is closed",
            ));
        };
        w.write_all(&line).await?;
        w.flush().await
    }

    /// Opens the server-to-client stream (the session's GET). `None` if one
    /// is already open or the child has ended.
    pub fn open_stream(&self) -> Option<mpsc::Receiver<Value>> {
        let mut st = self.state();
        if st.end.is_some() || st.get_stream.as_ref().is_some_and(|s| !s.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::channel(SINK_DEPTH);
        st.get_stream = Some(tx);
        Some(rx)
    }

    /// When the child was last busy, or `None` while it is: a request in
    /// flight or an open GET stream.
    pub fn idle_since(&self) -> Option<Instant> {
        let st = self.state();
        let streaming = st.get_stream.as_ref().is_some_and(|s| !s.is_closed());
        (st.ids.is_empty() && !streaming).then_some(st.last_used)
    }

    /// Its session made a request (after `initialize`).
    pub fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether its session made a request after `initialize`.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Asks the child to stop: stdin closed, then killed after [`GRACE`].
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once the child has ended and been reaped.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    pub fn is_ended(&self) -> bool {
        self.state().end.is_some()
    }

    fn route_message(&self, mut msg: Value) -> Action {
        let mut st = self.state();
        st.last_used = Instant::now();
        let kind = message::kind(&msg);
        match kind {
            Kind::Response => {
                return match st.ids.complete(&mut msg) {
                    Some(e) => {
                        if let Some(method) = &e.sink.stateless_method {
                            stateless::adapt_result(method, &mut msg);
                        }
                        Action::Deliver(e.sink.tx, msg)
                    }
                    None => Action::Drop("a response with an id the bridge never sent", msg),
                }
            }
            Kind::Invalid => return Action::Drop("not a JSON-RPC message", msg),
            Kind::Notification | Kind::Request => {}
        }
        if message::method(&msg) == Some("notifications/progress") {
            if let Some(e) = st.ids.progress(&mut msg) {
                return Action::Deliver(e.sink.tx.clone(), msg);
            }
        }
        if !self.shared {
            if let Some(e) = st.ids.only().filter(|e| e.sink.sse) {
                return Action::Deliver(e.sink.tx.clone(), msg);
            }
            if let Some(tx) = st.get_stream.as_ref().filter(|s| !s.is_closed()) {
                return Action::Deliver(tx.clone(), msg);
            }
        }
        if kind == Kind::Request {
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            return Action::ReplyToChild(message::error(
                id,
                METHOD_NOT_FOUND,
                "no client is listening: the bridge cannot forward this request",
            ));
        }
        Action::Drop("a message no client is listening for", msg)
    }

    /// Whether a line of junk may be logged now: `Some(n)` with the lines
    /// of junk not logged since the last one that was.
    fn junk_logged(&self) -> Option<u64> {
        self.junk_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(Instant::now())
    }

    async fn on_line(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let msg: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                if let Some(unlogged) = self.junk_logged() {
                    tracing::warn!(route = self.route, pid = self.pid, error = %e, line = %preview(line), unlogged, "the stdio server wrote a line that is not JSON; ignored");
                }
                return;
            }
        };
        match self.route_message(msg) {
            Action::Deliver(tx, msg) => {
                if message::kind(&msg) == Kind::Response {
                    let _ = tx.send(msg).await;
                } else if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
                    // A client that does not read its stream must not hold
                    // back the child's other answers: its progress is dropped.
                    tracing::debug!(
                        route = self.route,
                        pid = self.pid,
                        "a client lags behind its stream; a message for it was dropped"
                    );
                }
            }
            Action::ReplyToChild(reply) => {
                tracing::info!(
                    route = self.route,
                    pid = self.pid,
                    "the stdio server sent a request no client can answer; told it so"
                );
                let _ = self.write(&reply).await;
            }
            Action::Drop(why, msg) => {
                if let Some(unlogged) = self.junk_logged() {
                    let text = msg.to_string();
                    tracing::warn!(route = self.route, pid = self.pid, message = %preview(text.as_bytes()), unlogged, "dropped {why}");
                }
            }
        }
    }
}

/// A request sent to a child, waiting for its answer. Dropped before the
/// answer came (the client went away), it tells the child the request is
/// cancelled.
pub struct Waiting {
    pub rx: mpsc::Receiver<Value>,
    child: Arc<Child>,
    bridge_id: u64,
    done: bool,
}

impl Waiting {
    /// The answer has been received.
    pub fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done || self.child.state().ids.remove(self.bridge_id).is_none() {
            return;
        }
        let child = self.child.clone();
        let cancel = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": self.bridge_id, "reason": "the client went away"},
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = child.write(&cancel).await;
            });
        }
    }
}

fn preview(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    if line.len() > 200 {
        format!("{s}… ({} bytes)", line.len())
    } else {
        s
    }
}

enum End {
    Stopped,
    StdoutClosed,
    TooLong,
    ReadFailed(String),
}

async fn supervise(child: Arc<Child>, mut proc: tokio::process::Child, stdout: ChildStdout) {
    let mut reader = LineReader::new(BufReader::new(stdout), MAX_LINE);
    let end = loop {
        tokio::select! {
            biased;
            _ = child.stop.cancelled() => break End::Stopped,
            line = reader.next_line() => match line {
                Ok(Some(l)) => child.on_line(&l).await,
                Ok(None) => break End::StdoutClosed,
                Err(FramingError::TooLong { .. }) => break End::TooLong,
                Err(FramingError::Io(e)) => break End::ReadFailed(e.to_string()),
            },
        }
    };
    let what = child.describe();
    let unlogged = child
        .junk_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_suppressed();
    if unlogged > 0 {
        tracing::warn!(
            route = child.route,
            pid = child.pid,
            unlogged,
            "the stdio server wrote {unlogged} more lines of junk on stdout (not JSON-RPC, or not for any request) than were logged"
        );
    }
    // From here on no request is written to it.
    child.state().end = Some(format!("the stdio MCP server {what} is shutting down"));
    let killed = AtomicBool::new(false);
    let kill_now = |proc: &mut tokio::process::Child| {
        killed.store(true, Ordering::Relaxed);
        let _ = proc.start_kill();
    };
    if matches!(end, End::TooLong | End::ReadFailed(_)) {
        kill_now(&mut proc);
    }
    // Closing stdin is how an MCP stdio server is asked to exit.
    if let Ok(mut stdin) = tokio::time::timeout(GRACE, child.stdin.lock()).await {
        stdin.take();
    }
    let status = match tokio::time::timeout(GRACE, proc.wait()).await {
        Ok(s) => s,
        Err(_) => {
            kill_now(&mut proc);
            proc.wait().await
        }
    };
    let status = match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("its status is unknown: {e}"),
    };
    let killed = if killed.load(Ordering::Relaxed) {
        ", killed by the agent"
    } else {
        ""
    };
    let why = match end {
        End::Stopped => format!("the stdio MCP server {what} was stopped ({status})"),
        End::StdoutClosed => format!("the stdio MCP server {what} exited ({status}{killed})"),
        End::TooLong => format!(
            "the stdio MCP server {what} wrote a line longer than {MAX_LINE} bytes ({status}{killed})"
        ),
        End::ReadFailed(ref e) => {
            format!("reading from the stdio MCP server {what} failed: {e} ({status}{killed})")
        }
    };
    let waiting = {
        let mut st = child.state();
        st.end = Some(why.clone());
        st.get_stream = None;
        st.ids.drain()
    };
    match end {
        End::Stopped => tracing::info!(route = child.route, pid = child.pid, "{why}"),
        _ => tracing::warn!(
            route = child.route,
            pid = child.pid,
            failed_requests = waiting.len(),
            "{why}"
        ),
    }
    for e in waiting {
        let _ = e
            .sink
            .tx
            .try_send(message::error(e.client_id, INTERNAL_ERROR, &why));
    }
    child.ended.cancel();
}

async fn log_stderr(stderr: tokio::process::ChildStderr, route: String, pid: u32) {
    let mut reader = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    loop {
        match reader.next_line().await {
            Ok(Some(line)) => {
                tracing::info!(
                    route,
                    pid,
                    "child stderr: {}",
                    String::from_utf8_lossy(&line)
                );
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(route, pid, error = %e, "child stderr: unreadable; the rest is discarded");
                let mut rest = reader.into_inner();
                let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
                return;
            }
        }
    }
}
