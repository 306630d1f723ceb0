//! The laptop's last word. Every exchange the relay sends is decided again,
//! with the route owner's policy, before anything touches the local server:
//! the relay is trusted to say who is asking, but the owner's rules are
//! applied here too, with the same engine ([`policy`]), on the body the
//! local server would get.
//!
//! * A JSON-RPC POST is read whole (up to `--max-body`), classified message
//!   by message (SQL included) and decided; a refused body is answered with
//!   the same JSON-RPC errors the relay would send, and never forwarded.
//! * Anything else (an MCP GET stream or DELETE, a plain HTTP route) is
//!   decided as session plumbing (`ping`), like at the relay.
//!
//! Grants the owner made at the relay (`agent share`) come with each
//! exchange, as the relay applied them; they are compiled here, with the
//! same code, into permits added to the owner's policy (its forbids still
//! bind the grantee). Trusting the relay for them is trusting it for who is
//! asking, which the agent does anyway.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use policy::jsonrpc::{self, Message};
use policy::route_path;
use policy::sql::{self, SqlFacts};
use policy::{Caller, Decision, Engine, Policy, Request};
use protocol::{BodyKind, ExchangeHead, RouteGrant, UpstreamKind};
use serde_json::json;
use tunnel::{RecvHalf, SendHalf, TunnelBody};

use crate::error::AgentError;
use crate::inspector::Tap;
use crate::reply;
use crate::report::Summary;
use crate::upstream::ReqBody;

/// The route owner's policy, as given to `agent connect`.
#[derive(Debug, Clone)]
pub struct OwnerPolicy {
    /// What the hello sends the relay: `None` for the default (only the
    /// owner), else the Cedar text.
    pub text: Option<String>,
    policy: Policy,
}

impl OwnerPolicy {
    /// Compiled from `--allow`, `--tools` and `--read-only`; with none of
    /// them, the default: only the owner.
    pub fn from_flags(
        allow: &[String],
        tools: Option<&[String]>,
        read_only: bool,
    ) -> Result<OwnerPolicy, AgentError> {
        Self::from_owner_flags(allow, tools, None, None, read_only)
    }

    /// [`OwnerPolicy::from_flags`] with `--resources` and `--prompts`: the
    /// only resources anybody may read and prompts anybody may get (URI or
    /// name patterns, `*` matching any run of characters); not given: any.
    pub fn from_owner_flags(
        allow: &[String],
        tools: Option<&[String]>,
        resources: Option<&[String]>,
        prompts: Option<&[String]>,
        read_only: bool,
    ) -> Result<OwnerPolicy, AgentError> {
        let policy = Policy::from_owner_flags(allow, tools, resources, prompts, read_only)
            .map_err(|e| AgentError::Config(format!("policy flags: {e}")))?;
        let default = allow.is_empty()
            && tools.is_none()
            && resources.is_none()
            && prompts.is_none()
            && !read_only;
        Ok(OwnerPolicy {
            text: (!default).then(|| policy.cedar_text().to_owned()),
            policy,
        })
    }

    /// A full Cedar policy from `--policy FILE` (validated against the
    /// schema now, with the line of any problem).
    pub fn from_file(path: &Path) -> Result<OwnerPolicy, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            AgentError::Config(format!("cannot read the policy {}: {e}", path.display()))
        })?;
        let policy = Policy::from_cedar_text(&text, &path.display().to_string())
            .map_err(|e| AgentError::Config(e.to_string()))?;
        Ok(OwnerPolicy {
            text: Some(text),
            policy,
        })
    }

    /// The Cedar text in force (generated for flags).
    pub fn cedar_text(&self) -> &str {
        self.policy.cedar_text()
    }
}

/// Most distinct sets of grants kept compiled; emptied when full.
const GRANTED_ENTRIES: usize = 64;

/// Decides exchanges before the local server sees them.
pub struct Gate {
    engine: Arc<Engine>,
    /// The owner's policy with the grants of recent exchanges, by grants.
    granted: Mutex<HashMap<Vec<RouteGrant>, Arc<Engine>>>,
    plain_http: bool,
    max_body: usize,
}

impl Gate {
    pub fn new(policy: &OwnerPolicy, kind: UpstreamKind, max_body: usize) -> Gate {
        Gate {
            engine: Arc::new(Engine::new(policy.policy.clone(), None)),
            granted: Mutex::new(HashMap::new()),
            plain_http: kind == UpstreamKind::PlainHttp,
            max_body,
        }
    }

    /// The engine for an exchange: the owner's policy with the exchange's
    /// grants. Grants that cannot be compiled are left out (they permit
    /// nothing).
    fn engine_for(&self, head: &ExchangeHead) -> Arc<Engine> {
        if head.grants.is_empty() {
            return self.engine.clone();
        }
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = granted.get(&head.grants) {
            return e.clone();
        }
        let grants: Vec<policy::Grant> = head
            .grants
            .iter()
            .filter_map(|g| match to_policy(g) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(grant = g.id, error = %e, "a grant from the relay is unusable; ignored");
                    None
                }
            })
            .collect();
        let engine = match self.engine.owner().with_grants(&grants) {
            Ok(p) => Arc::new(Engine::new(p, None)),
            Err(e) => {
                tracing::warn!(error = %e, "the route's grants do not combine with the owner's policy; ignored");
                self.engine.clone()
            }
        };
        if granted.len() >= GRANTED_ENTRIES {
            granted.clear();
        }
        granted.insert(head.grants.clone(), engine.clone());
        engine
    }

    /// Decides `head` (whose route belongs to `owner`), reading its body if
    /// it is JSON-RPC. Admitted: the body to hand to the local server.
    /// Refused: the answer has been sent. With `tap` (`--inspect`), the body
    /// read and any refusal are shown to it.
    pub async fn admit(
        &self,
        head: &ExchangeHead,
        owner: &str,
        recv: RecvHalf,
        send: &mut SendHalf,
        tap: Option<&Tap>,
    ) -> (Option<ReqBody>, Summary) {
        if let Some((verdict, summary)) = self.judge_route(head) {
            if let Verdict::Refuse {
                status,
                body: Some(body),
            } = verdict
            {
                tapped(tap, status, Some(&body));
                reply::json(send, status, &body).await;
            }
            return (None, summary);
        }
        let (verdict, summary, body) = if self.plain_http || head.method != "POST" {
            let (verdict, summary) = self.judge_plumbing(head, owner);
            (verdict, summary, streamed(head, recv))
        } else {
            match read_capped(head, recv, self.max_body).await {
                Ok(bytes) => {
                    if let Some(tap) = tap {
                        tap.request(&bytes);
                    }
                    let (verdict, summary) = self.judge_body(head, owner, &bytes);
                    let body = Full::new(bytes)
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    (verdict, summary, body)
                }
                Err(ReadError::TooLarge) => {
                    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                        "message": format!("request body exceeds the agent's --max-body of {} bytes", self.max_body)}});
                    tapped(tap, StatusCode::PAYLOAD_TOO_LARGE, Some(&body));
                    reply::json(send, StatusCode::PAYLOAD_TOO_LARGE, &body).await;
                    return (None, refused("POST", "body-too-large"));
                }
                Err(ReadError::Aborted(e)) => {
                    tracing::debug!(request_id = head.request_id, error = %e, "request body cut off");
                    return (None, refused("POST", "client-aborted"));
                }
            }
        };
        match verdict {
            Verdict::Pass => (Some(body), summary),
            Verdict::Refuse { status, body } => {
                tapped(tap, status, body.as_ref());
                match body {
                    Some(body) => reply::json(send, status, &body).await,
                    None => reply::empty(send, status).await,
                }
                (None, summary)
            }
        }
    }

    /// Checks the method and path of `head` (see [`route_path`]): an MCP
    /// route takes only its own URL and POST, GET, DELETE; no route takes a
    /// dot segment. A relay that forgot to check (or an old one) is refused
    /// here. `None`: it may pass on to the policy.
    pub fn judge_route(&self, head: &ExchangeHead) -> Option<(Verdict, Summary)> {
        route_path::admit(!self.plain_http, &head.method, &head.path)
            .err()
            .map(|refusal| path_refusal(head, &refusal))
    }

    /// Decides a request that carries no JSON-RPC message (an MCP GET stream
    /// or DELETE, or any request of a plain HTTP route).
    pub fn judge_plumbing(&self, head: &ExchangeHead, owner: &str) -> (Verdict, Summary) {
        let decision = self.engine_for(head).decide(&Request {
            caller: caller(head, owner),
            message: &policy::body::session_plumbing(),
            sql: None,
        });
        let summary = Summary {
            what: head.method.clone(),
            allowed: decision.allowed,
            policies: decision.policies.clone(),
        };
        if decision.allowed && self.plain_http && !route_path::is_safe(&head.method) {
            let read_only: Vec<&str> = head
                .grants
                .iter()
                .filter(|g| g.read_only)
                .map(|g| g.id.as_str())
                .collect();
            if route_path::rests_on_read_only_grants(&decision, &read_only) {
                let refusal = route_path::PathRefusal::ReadOnly(head.method.clone());
                return path_refusal(head, &refusal);
            }
        }
        if decision.allowed {
            return (Verdict::Pass, summary);
        }
        let body = json!({"error": "forbidden",
            "message": format!("the route owner's policy on the laptop: {}", decision.message())});
        (
            Verdict::Refuse {
                status: StatusCode::FORBIDDEN,
                body: Some(body),
            },
            summary,
        )
    }

    /// Decides a POSTed body of JSON-RPC messages, each on its own; one
    /// denial refuses the body.
    pub fn judge_body(&self, head: &ExchangeHead, owner: &str, bytes: &[u8]) -> (Verdict, Summary) {
        if !is_json(head) {
            let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                "message": "MCP messages must be POSTed with Content-Type: application/json"}});
            let verdict = Verdict::Refuse {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body: Some(body),
            };
            return (verdict, refused("POST", "not-json"));
        }
        let messages = match jsonrpc::classify_body(bytes) {
            Ok(m) => m,
            Err(e) => {
                let verdict = Verdict::Refuse {
                    status: StatusCode::BAD_REQUEST,
                    body: Some(e.to_jsonrpc_error(None)),
                };
                return (verdict, refused("POST", "malformed-jsonrpc"));
            }
        };
        let facts: Vec<Option<SqlFacts>> = messages
            .iter()
            .map(|m| m.sql_argument().map(sql::classify))
            .collect();
        let decisions = self
            .engine_for(head)
            .decide_body(caller(head, owner), &messages, &facts);
        let summary = summarize(&messages, &decisions);
        if summary.allowed {
            return (Verdict::Pass, summary);
        }
        let body = policy::body::denial(
            &messages,
            &decisions,
            "the route owner's policy on the laptop: ",
        );
        let status = if body.is_some() {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        (Verdict::Refuse { status, body }, summary)
    }
}

/// Shows the agent's own answer to the inspector's tap, if any.
fn tapped(tap: Option<&Tap>, status: StatusCode, body: Option<&serde_json::Value>) {
    if let Some(tap) = tap {
        tap.status(status.as_u16());
        if let Some(body) = body {
            tap.response_chunk(body.to_string().as_bytes());
        }
    }
}

/// What the gate says about one exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// On to the local server.
    Pass,
    /// Answered by the agent: `status`, and a JSON body (none for 202).
    Refuse {
        status: StatusCode,
        body: Option<serde_json::Value>,
    },
}

fn caller<'a>(head: &'a ExchangeHead, owner: &'a str) -> Caller<'a> {
    Caller {
        email: &head.identity.subject,
        groups: &head.identity.groups,
        client_id: &head.identity.credential_name,
        client_name: None,
        route: &head.route,
        route_owner: owner,
        time: SystemTime::now(),
    }
}

/// A grant as the relay sent it, as the engine takes it.
fn to_policy(g: &RouteGrant) -> Result<policy::Grant, policy::PolicyError> {
    let grant = policy::Grant {
        id: g.id.clone(),
        grantee: policy::Grantee::parse(&g.with)?,
        tools: g.tools.clone(),
        resources: g.resources.clone(),
        prompts: g.prompts.clone(),
        read_only: g.read_only,
        expires_at: g.expires_at,
    };
    grant.check()?;
    Ok(grant)
}

/// The agent's answer to a request refused for its method or path.
fn path_refusal(head: &ExchangeHead, refusal: &route_path::PathRefusal) -> (Verdict, Summary) {
    let body = json!({"error": refusal.code(),
        "message": format!("the agent on the laptop: {refusal}")});
    (
        Verdict::Refuse {
            status: refusal.status(),
            body: Some(body),
        },
        refused(&head.method, refusal.rule()),
    )
}

fn refused(what: &str, policy: &str) -> Summary {
    Summary {
        what: what.to_owned(),
        allowed: false,
        policies: vec![policy.to_owned()],
    }
}

/// The request body as it comes, unread.
fn streamed(head: &ExchangeHead, recv: RecvHalf) -> ReqBody {
    match head.body {
        BodyKind::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        BodyKind::Length(_) | BodyKind::Streaming => TunnelBody::new(recv, None).boxed_unsync(),
    }
}

enum ReadError {
    TooLarge,
    Aborted(String),
}

async fn read_capped(head: &ExchangeHead, recv: RecvHalf, max: usize) -> Result<Bytes, ReadError> {
    if let BodyKind::Length(n) = head.body {
        if n > max as u64 {
            return Err(ReadError::TooLarge);
        }
    }
    match Limited::new(streamed(head, recv), max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Aborted(e.to_string())),
    }
}

fn is_json(head: &ExchangeHead) -> bool {
    head.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-type")
            && std::str::from_utf8(&h.value).is_ok_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            })
    })
}

fn summarize(messages: &[Message], decisions: &[Decision]) -> Summary {
    let what = match messages {
        [one] => match (&one.method, &one.target) {
            (Some(m), Some(t)) => format!("{m} {t}"),
            (Some(m), None) => m.clone(),
            (None, _) => one.kind.as_str().to_owned(),
        },
        many => format!("batch of {}", many.len()),
    };
    let allowed = decisions.iter().all(|d| d.allowed);
    let mut policies: Vec<String> = Vec::new();
    for d in decisions.iter().filter(|d| d.allowed == allowed) {
        for p in &d.policies {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
    }
    Summary {
        what,
        allowed,
        policies,
    }
}

#[cfg(test)]
mod tests;
