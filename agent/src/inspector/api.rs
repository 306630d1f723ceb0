//! The inspector's HTTP server: the page, its script and style, and the JSON
//! API the page (or a script) reads.
//!
//! | | |
//! |---|---|
//! | `GET /?token=SECRET` | sets the cookie, then `303` to `/` |
//! | `GET /`, `/app.js`, `/app.css` | the page |
//! | `GET /api/session` | `{"csrf": …}` for the page's state changes |
//! | `GET /api/exchanges?caller=&tool=&decision=&limit=` | rows, newest first |
//! | `GET /api/exchanges/{id}` | the detail of one |
//! | `GET /api/events` | server-sent events, one row per new exchange |
//! | `POST /api/clear` | forgets the exchanges kept |
//! | `POST /api/exchanges/{id}/approve[?remember=1]` | `--approve`: lets a pending exchange go on (and, with `remember`, the caller's next ones for 10 minutes) |
//! | `POST /api/exchanges/{id}/deny` | `--approve`: refuses it |
//!
//! Everything answers 401 without the secret (cookie or bearer), and every
//! answer carries a strict Content-Security-Policy.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use super::approval::Decision;
use super::auth::{self, Proof};
use super::exchange::Row;
use super::page;
use super::Inspector;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The policy every answer carries: nothing but this origin's own script,
/// style and API; no frames, no forms elsewhere, no inline script.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The most rows one listing returns.
const MAX_ROWS: usize = 10_000;

/// A listing's filters (`?caller=&tool=&decision=&limit=`).
#[derive(Debug, Clone)]
pub struct Filter {
    /// A substring of the caller's email or client.
    pub caller: Option<String>,
    /// The tool, exactly.
    pub tool: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    pub limit: usize,
}

impl Filter {
    fn parse(query: Option<&str>) -> Filter {
        let mut f = Filter {
            caller: None,
            tool: None,
            decision: None,
            limit: MAX_ROWS,
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            match k.as_ref() {
                "caller" => f.caller = Some(v.to_lowercase()),
                "tool" => f.tool = Some(v),
                "decision" => f.decision = Some(v.to_lowercase()),
                "limit" => f.limit = v.parse().unwrap_or(MAX_ROWS).min(MAX_ROWS),
                _ => {}
            }
        }
        f
    }

    pub fn passes(&self, row: &Row) -> bool {
        self.caller.as_ref().is_none_or(|c| {
            row.caller.to_lowercase().contains(c) || row.client.to_lowercase().contains(c)
        }) && self
            .tool
            .as_ref()
            .is_none_or(|t| row.tool.as_deref() == Some(t.as_str()))
            && self
                .decision
                .as_ref()
                .is_none_or(|d| row.decision == d.as_str())
    }
}

/// Serves connections from `listener` until the process ends. `hosts`: the
/// `Host` values accepted (`None`: any).
pub async fn serve(listener: TcpListener, inspector: Arc<Inspector>, hosts: Option<Vec<String>>) {
    let hosts: Arc<Option<Vec<String>>> = Arc::new(hosts);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "inspector: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let inspector = inspector.clone();
        let hosts = hosts.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let inspector = inspector.clone();
                let hosts = hosts.clone();
                async move { Ok::<_, Infallible>(handle(&inspector, hosts.as_deref(), req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle(
    inspector: &Inspector,
    hosts: Option<&[String]>,
    req: Request<Incoming>,
) -> Response<Body> {
    if !auth::host_allowed(req.headers(), hosts) {
        return text(
            StatusCode::MISDIRECTED_REQUEST,
            "this inspector does not answer for that Host\n",
        );
    }
    let secret = &inspector.secret;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    // The link the agent printed: trade the token for the cookie, and drop
    // it from the address bar.
    if req.method() == Method::GET && path == "/" {
        let token = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        if let Some(token) = token {
            if !secret.matches(&token) {
                return unauthorized();
            }
            let mut resp = empty(StatusCode::SEE_OTHER);
            resp.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&secret.set_cookie()) {
                resp.headers_mut().insert(SET_COOKIE, v);
            }
            return resp;
        }
    }
    let Some(proof) = secret.proof(req.headers()) else {
        return unauthorized();
    };
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        if !secret.allows_change(proof, req.headers()) {
            return json_answer(
                StatusCode::FORBIDDEN,
                &json!({"error": "csrf", "message": "a change needs the page's CSRF token from its own origin (or Authorization: Bearer)"}),
            );
        }
        return match (method.as_str(), path.as_str()) {
            ("POST", "/api/clear") => {
                inspector.clear();
                json_answer(StatusCode::OK, &json!({"cleared": true}))
            }
            ("POST", p) => match decision(p, query.as_deref(), proof) {
                Some((id, d)) => {
                    let approved = d.approve;
                    match inspector.decide(id, d) {
                        Ok(()) => {
                            json_answer(StatusCode::OK, &json!({"id": id, "approved": approved}))
                        }
                        Err(e) => json_answer(
                            StatusCode::CONFLICT,
                            &json!({"error": "not_pending", "message": e.to_string()}),
                        ),
                    }
                }
                None => not_found(),
            },
            _ => not_found(),
        };
    }
    match path.as_str() {
        "/" => asset(page::HTML, "text/html; charset=utf-8"),
        "/app.js" => asset(page::SCRIPT, "text/javascript; charset=utf-8"),
        "/app.css" => asset(page::STYLE, "text/css; charset=utf-8"),
        "/api/session" => {
            let (kept, max) = inspector.kept();
            let csrf = (proof == Proof::Cookie).then(|| secret.csrf());
            json_answer(
                StatusCode::OK,
                &json!({"csrf": csrf, "csrf_header": auth::CSRF_HEADER, "kept": kept, "history": max,
                    "approve": inspector.approve_mode()}),
            )
        }
        "/api/exchanges" => {
            let rows = inspector.rows(&Filter::parse(query.as_deref()));
            json_answer(StatusCode::OK, &json!({ "exchanges": rows }))
        }
        "/api/events" => events(inspector),
        p => match p.strip_prefix("/api/exchanges/").map(str::parse::<u64>) {
            Some(Ok(id)) => match inspector.detail(id) {
                Some(d) => json_answer(StatusCode::OK, &*d),
                None => json_answer(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "not_found", "message": format!("no exchange {id} (only the last ones are kept)")}),
                ),
            },
            _ => not_found(),
        },
    }
}

/// `/api/exchanges/{id}/approve` or `/deny`, as a decision.
fn decision(path: &str, query: Option<&str>, proof: Proof) -> Option<(u64, Decision)> {
    let rest = path.strip_prefix("/api/exchanges/")?;
    let (id, verb) = rest.split_once('/')?;
    let id = id.parse().ok()?;
    let approve = match verb {
        "approve" => true,
        "deny" => false,
        _ => return None,
    };
    let remember = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == "remember" && (v == "1" || v == "true"));
    let by = match proof {
        Proof::Cookie => "owner (page)",
        Proof::Bearer => "owner (api)",
    };
    Some((
        id,
        Decision {
            approve,
            by: by.to_owned(),
            remember,
        },
    ))
}

/// Server-sent events: one `exchange` event (a row) per new exchange.
fn events(inspector: &Inspector) -> Response<Body> {
    let rx = inspector.subscribe();
    let hello = futures::stream::once(async {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b": inspector events\n\n")))
    });
    let rows = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(row) => Bytes::from(format!("event: exchange\ndata: {row}\n\n")),
            // A slow page missed some: it reloads the list.
            Err(RecvError::Lagged(_)) => Bytes::from_static(b"event: lagged\ndata: {}\n\n"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(Frame::data(event)), rx))
    });
    let body = StreamBody::new(futures::StreamExt::chain(hello, rows));
    let mut resp = Response::new(BodyExt::boxed_unsync(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    secure(resp)
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(resp)
}

fn json_answer<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    secure(resp)
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(resp)
}

fn unauthorized() -> Response<Body> {
    let mut resp = text(
        StatusCode::UNAUTHORIZED,
        "the inspector needs its secret: open the URL the agent printed (…/?token=SECRET), or send Authorization: Bearer SECRET\n",
    );
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"drawbridge inspector\""),
    );
    resp
}

fn not_found() -> Response<Body> {
    json_answer(
        StatusCode::NOT_FOUND,
        &json!({"error": "not_found", "message": "no such page"}),
    )
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    secure(resp)
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The headers every answer carries.
fn secure(mut resp: Response<Body>) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
