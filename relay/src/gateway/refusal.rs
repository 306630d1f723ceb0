//! Every reason the relay answers a route's request itself, and what each
//! answer is: its HTTP status, its body (a JSON error, or a JSON-RPC error),
//! its `WWW-Authenticate` challenge when any, and the rule its audit event
//! names. The phases return a [`Refusal`]; [`Refusal::answer`] is the one
//! place that turns it into the audit rule and the response.

use std::borrow::Cow;
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use policy::jsonrpc::{HeaderMismatch, ParseError};
use policy::route_path::{self, PathRefusal};
use policy::Decision;
use serde_json::{json, Value};

use crate::agents::forward::ForwardError;
use crate::gateway::legacy_sse::LegacyRefusal;
use crate::gateway::trail::Trail;
use crate::http::body::empty;
use crate::http::body::RespBody;
use crate::http::early_answer;
use crate::http::response::{error, json};
use crate::limits::rate::Limited;
use crate::oauth;
use crate::oauth::scope;
use crate::state::SharedState;

/// The audit rule of a request refused for its token's scope.
pub const INSUFFICIENT_SCOPE: &str = "insufficient-scope";

/// The JSON-RPC error code of a message refused for the token's scope.
pub const INSUFFICIENT_SCOPE_CODE: i64 = -32003;

/// Why the relay answers a route's request itself.
#[derive(Debug)]
pub enum Refusal {
    /// The audit log cannot be written: nothing is served (503).
    AuditUnavailable,
    /// A browser's request from an `Origin` not allowed (403); the origin as
    /// the request shows it.
    Origin(String),
    /// No usable bearer token (401, with the challenge pointing at the
    /// route's protected-resource metadata). With a token presented, the
    /// RFC 6750 error code and its description.
    Unauthenticated(Option<(&'static str, String)>),
    /// The state store failed while checking the token (500).
    TokenUncheckable,
    /// No such route is claimed on this relay (404).
    UnknownRoute,
    /// The state store failed while looking up the route or its grants
    /// (500).
    StoreFailed,
    /// The state store is a database on the network (PostgreSQL) that
    /// cannot be read now, and the caches cannot be proven fresh (503, with
    /// `Retry-After`; a JSON-RPC error for a POST).
    StoreUnavailable,
    /// A rate limit refused it (429, with `Retry-After`).
    RateLimited(Limited),
    /// Its MCP session lived in a replica that is gone (404).
    SessionGone,
    /// No agent serves the route (503).
    NoAgent,
    /// Its method or path is not one the route takes, or a read-only grant
    /// does not cover it.
    Path(PathRefusal),
    /// A message to a legacy HTTP+SSE session endpoint that cannot be taken.
    Legacy(LegacyRefusal),
    /// The body did not arrive in time (408): a JSON-RPC error for an MCP
    /// client's POST, a JSON error otherwise.
    BodyTimeout { wait: Duration, jsonrpc: bool },
    /// The JSON-RPC body is larger than the cap (413).
    BodyTooLarge { cap: usize },
    /// The client ended the request while sending its body (400).
    ClientAborted(String),
    /// The body is not JSON-RPC (400).
    Malformed(ParseError),
    /// The `Mcp-Method`/`Mcp-Name` headers contradict the message with this
    /// id.
    HeaderMismatch {
        mismatch: Box<HeaderMismatch>,
        id: Option<Value>,
    },
    /// The policy refused a message: the JSON-RPC errors answering its
    /// requests (HTTP 200, as JSON-RPC errors are); none when the body held
    /// only notifications or responses (202).
    Policy(Option<Value>),
    /// The token's scope (`mcp:read`) does not cover `what` (403, with a
    /// step-up challenge); `id` is the request answered.
    InsufficientScope { id: Option<Value>, what: String },
    /// An MCP route's POST that is not JSON (415).
    NotJson,
    /// The policy refused a request without JSON-RPC messages (403).
    Forbidden(Decision),
    /// Not refused: allowed, but no agent took it (its replicas went away
    /// while it was sent). Audited as decided, with the 503.
    AgentLost,
    /// Not refused: allowed, but the exchange with the agent failed.
    /// Audited as decided, with the status.
    Exchange(ForwardError),
}

impl Refusal {
    /// The rule the audit event names; `None`: the request was allowed, and
    /// is audited as such.
    pub fn rule(&self) -> Option<Cow<'static, str>> {
        let rule = match self {
            Refusal::AuditUnavailable => "audit-unavailable",
            Refusal::Origin(_) => "origin-not-allowed",
            Refusal::Unauthenticated(_) | Refusal::TokenUncheckable => "authentication",
            Refusal::UnknownRoute => "unknown-route",
            Refusal::StoreFailed => "internal-error",
            Refusal::StoreUnavailable => "store-unavailable",
            Refusal::RateLimited(limited) => {
                return Some(format!("rate-limit-{}", limited.what).into())
            }
            Refusal::SessionGone => "session-gone",
            Refusal::NoAgent => "no-agent",
            Refusal::Path(refusal) => refusal.rule(),
            Refusal::Legacy(_) => "legacy-session",
            Refusal::BodyTimeout { .. } => "body-timeout",
            Refusal::BodyTooLarge { .. } => "body-too-large",
            Refusal::ClientAborted(_) => "client-aborted",
            Refusal::Malformed(_) => "malformed-jsonrpc",
            Refusal::HeaderMismatch { .. } => "mcp-header-mismatch",
            Refusal::Policy(_) => "policy",
            Refusal::InsufficientScope { .. } => INSUFFICIENT_SCOPE,
            Refusal::NotJson => "not-json",
            Refusal::Forbidden(decision) => return Some(decision.policies.join(",").into()),
            Refusal::AgentLost | Refusal::Exchange(_) => return None,
        };
        Some(Cow::Borrowed(rule))
    }

    /// Whether the request's body is read (bounded) before the answer, if
    /// it was not read yet: answers given before the body was needed (see
    /// [`early_answer`]).
    pub fn reads_body_first(&self) -> bool {
        matches!(
            self,
            Refusal::AuditUnavailable
                | Refusal::StoreUnavailable
                | Refusal::Unauthenticated(_)
                | Refusal::TokenUncheckable
                | Refusal::UnknownRoute
                | Refusal::RateLimited(_)
                | Refusal::SessionGone
                | Refusal::NoAgent
        )
    }

    /// Records the refusal in `trail` and answers it; `body` (if no phase
    /// took it) is read first when [`Refusal::reads_body_first`].
    pub async fn answer(
        self,
        state: &SharedState,
        route: &str,
        trail: &mut Trail,
        parts: Parts,
        body: Option<Incoming>,
    ) -> Response<RespBody> {
        if let Some(rule) = self.rule() {
            trail.deny(&rule);
        }
        let read_first = self.reads_body_first();
        let response = match self {
            // An MCP client's POST gets a JSON-RPC error it can show.
            Refusal::StoreUnavailable => store_unavailable(parts.method == http::Method::POST),
            refusal => refusal.response(state, route),
        };
        match body {
            Some(body) if read_first => {
                early_answer::after_body(Request::from_parts(parts, body), response).await
            }
            _ => response,
        }
    }

    /// The answer to the client of `route`.
    pub fn response(self, state: &SharedState, route: &str) -> Response<RespBody> {
        match self {
            Refusal::AuditUnavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the relay cannot write its audit log; refusing requests until it can",
            ),
            Refusal::Origin(shown) => error(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                &format!(
                    "Origin {shown:?} may not call this relay; if this web client is yours, start the relay with --allow-origin {shown}"
                ),
            ),
            Refusal::Unauthenticated(presented) => {
                let error_code = presented.as_ref().map(|(c, d)| (*c, d.as_str()));
                unauthorized(state, route, error_code)
            }
            Refusal::TokenUncheckable | Refusal::StoreFailed => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the relay's state store failed",
            ),
            Refusal::StoreUnavailable => store_unavailable(false),
            Refusal::UnknownRoute => error(
                StatusCode::NOT_FOUND,
                "unknown_route",
                &format!("no route named '{route}' on this relay"),
            ),
            Refusal::RateLimited(limited) => {
                let mut resp = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!(
                        "too many requests for this {} (limit {}); retry in {} s",
                        limited.what,
                        limited.rate,
                        limited.retry_after_secs()
                    ),
                );
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(limited.retry_after_secs()),
                );
                resp
            }
            Refusal::SessionGone => crate::sessions::affinity::gone(route),
            Refusal::NoAgent | Refusal::AgentLost => no_agent(route),
            Refusal::Path(refusal) => path_refused(route, &refusal),
            Refusal::Legacy(refusal) => {
                error(refusal.status(), refusal.code(), &refusal.message(route))
            }
            Refusal::BodyTimeout {
                wait,
                jsonrpc: true,
            } => json(
                StatusCode::REQUEST_TIMEOUT,
                &json!({"jsonrpc": "2.0", "id": null, "error": {
                "code": -32600,
                "message": format!(
                    "the request body did not arrive within {wait:?}"
                )}}),
            ),
            Refusal::BodyTimeout {
                wait,
                jsonrpc: false,
            } => error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &format!("the request body did not arrive within {wait:?}"),
            ),
            Refusal::BodyTooLarge { cap } => json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"jsonrpc": "2.0", "id": null, "error": {
                    "code": -32600,
                    "message": format!("request body exceeds {cap} bytes")}}),
            ),
            Refusal::ClientAborted(e) => error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("could not read the request body: {e}"),
            ),
            Refusal::Malformed(e) => json(StatusCode::BAD_REQUEST, &e.to_jsonrpc_error(None)),
            Refusal::HeaderMismatch { mismatch, id } => {
                json(mismatch.http_status(), &mismatch.to_jsonrpc_error(id.as_ref()))
            }
            Refusal::Policy(Some(errors)) => json(StatusCode::OK, &errors),
            Refusal::Policy(None) => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::ACCEPTED;
                resp
            }
            Refusal::InsufficientScope { id, what } => {
                insufficient_scope(state, route, id.as_ref(), &what)
            }
            Refusal::NotJson => json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &json!({"jsonrpc": "2.0", "id": null, "error": {
                    "code": -32600,
                    "message": "MCP messages must be POSTed with Content-Type: application/json"}}),
            ),
            Refusal::Forbidden(decision) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("route '{route}': {}", decision.message()),
            ),
            Refusal::Exchange(e) => {
                let code = match e {
                    ForwardError::Timeout(_) => "agent_timeout",
                    ForwardError::Open(_) | ForwardError::PeerGone(_) => "agent_unavailable",
                    ForwardError::NoAnswer(_) | ForwardError::Violation(_) => "agent_error",
                };
                error(e.status(), code, &format!("route '{route}': {e}"))
            }
        }
    }
}

/// What a client is told while the database cannot be read.
const STORE_UNAVAILABLE: &str =
    "the relay cannot reach its database to check this request; retry shortly";

/// The 503 of [`Refusal::StoreUnavailable`]: a JSON-RPC error (`jsonrpc`)
/// or a JSON one, with `Retry-After: 1`.
fn store_unavailable(jsonrpc: bool) -> Response<RespBody> {
    let mut resp = if jsonrpc {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"jsonrpc": "2.0", "id": null, "error": {
                "code": -32000,
                "message": STORE_UNAVAILABLE,
                "data": {"error": "store_unavailable"}}}),
        )
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            STORE_UNAVAILABLE,
        )
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// The answer to a request refused for its method or path.
fn path_refused(route: &str, refusal: &PathRefusal) -> Response<RespBody> {
    let mut resp = error(
        refusal.status(),
        refusal.code(),
        &format!("route '{route}': {refusal}"),
    );
    if let PathRefusal::McpMethod(_) = refusal {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(route_path::MCP_METHODS),
        );
    }
    resp
}

fn no_agent(route: &str) -> Response<RespBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_unavailable",
        &format!("no agent is connected for route '{route}'"),
    )
}

/// A 401 whose challenge points at the route's protected-resource metadata
/// (RFC 9728), with the error when a token was presented (RFC 6750).
fn unauthorized(
    state: &SharedState,
    route: &str,
    error_code: Option<(&str, &str)>,
) -> Response<RespBody> {
    let (code, description) =
        error_code.unwrap_or(("unauthorized", "this route needs a bearer token"));
    let mut resp = error(StatusCode::UNAUTHORIZED, code, description);
    let challenge = oauth::metadata::challenge(state, route, error_code);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The 403 of a token whose scope (`mcp:read`) does not cover `what`: the
/// challenge names the scope to ask for (`mcp`, RFC 6750 §3.1), and the body
/// is a JSON-RPC error answering request `id`.
fn insufficient_scope(
    state: &SharedState,
    route: &str,
    id: Option<&Value>,
    what: &str,
) -> Response<RespBody> {
    let message = format!(
        "route '{route}': the token's scope ({}) allows only reading; {what} needs scope '{}'",
        scope::READ,
        scope::FULL
    );
    let mut resp = json(
        StatusCode::FORBIDDEN,
        &json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": INSUFFICIENT_SCOPE_CODE,
            "message": message,
            "data": {"error": "insufficient_scope", "scope": scope::FULL}}}),
    );
    let challenge = oauth::metadata::step_up_challenge(state, route, scope::FULL, &message);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limits::rate::Rate;

    /// Every refusal with the audit rule operators grep for (and the e2e
    /// tests check), and whether the body is read before answering.
    #[test]
    fn every_refusal_names_its_audit_rule() {
        let limited = Limited {
            what: "identity",
            rate: "2/s".parse::<Rate>().expect("rate"),
            retry_after: Duration::from_millis(300),
        };
        let forbidden = Decision {
            allowed: false,
            policies: vec!["a".into(), "org/b".into()],
            errors: Vec::new(),
        };
        let cases: Vec<(Refusal, Option<&str>, bool)> = vec![
            (Refusal::AuditUnavailable, Some("audit-unavailable"), true),
            (
                Refusal::Origin("x".into()),
                Some("origin-not-allowed"),
                false,
            ),
            (Refusal::Unauthenticated(None), Some("authentication"), true),
            (Refusal::TokenUncheckable, Some("authentication"), true),
            (Refusal::UnknownRoute, Some("unknown-route"), true),
            (Refusal::StoreFailed, Some("internal-error"), false),
            (Refusal::StoreUnavailable, Some("store-unavailable"), true),
            (
                Refusal::RateLimited(limited),
                Some("rate-limit-identity"),
                true,
            ),
            (Refusal::SessionGone, Some("session-gone"), true),
            (Refusal::NoAgent, Some("no-agent"), true),
            (
                Refusal::Path(PathRefusal::ReadOnly("PUT".into())),
                Some(PathRefusal::ReadOnly(String::new()).rule()),
                false,
            ),
            (
                Refusal::Legacy(LegacyRefusal::NotPost),
                Some("legacy-session"),
                false,
            ),
            (
                Refusal::BodyTimeout {
                    wait: Duration::from_secs(1),
                    jsonrpc: true,
                },
                Some("body-timeout"),
                false,
            ),
            (
                Refusal::BodyTooLarge { cap: 1 },
                Some("body-too-large"),
                false,
            ),
            (
                Refusal::ClientAborted("reset".into()),
                Some("client-aborted"),
                false,
            ),
            (
                Refusal::Malformed(ParseError::EmptyBatch),
                Some("malformed-jsonrpc"),
                false,
            ),
            (
                Refusal::HeaderMismatch {
                    mismatch: Box::new(HeaderMismatch::MissingMethod),
                    id: None,
                },
                Some("mcp-header-mismatch"),
                false,
            ),
            (Refusal::Policy(None), Some("policy"), false),
            (
                Refusal::InsufficientScope {
                    id: None,
                    what: "x".into(),
                },
                Some(INSUFFICIENT_SCOPE),
                false,
            ),
            (Refusal::NotJson, Some("not-json"), false),
            (Refusal::Forbidden(forbidden), Some("a,org/b"), false),
            // Allowed, then not delivered: audited as allowed.
            (Refusal::AgentLost, None, false),
            (
                Refusal::Exchange(ForwardError::Timeout(Duration::from_secs(1))),
                None,
                false,
            ),
        ];
        for (refusal, rule, read_first) in cases {
            assert_eq!(refusal.rule().as_deref(), rule, "{refusal:?}");
            assert_eq!(refusal.reads_body_first(), read_first, "{refusal:?}");
        }
    }
}
