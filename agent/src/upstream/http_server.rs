//! A local HTTP server that answers a route (`--http URL`, with
//! `--plain-http` when it is not an MCP server).

use http::StatusCode;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use policy::route_path;
use protocol::ExchangeHead;
use tunnel::SendHalf;

use crate::error::AgentError;
use crate::inspector::Tap;
use crate::upstream::exchange::{error_chain, reply_error, request, send_capped, ReqBody};
use crate::upstream::response_cap::ResponseCap;
/// A local HTTP server that answers a route.
pub struct HttpUpstream {
    pub(super) base: url::Url,
    client: Client<HttpConnector, ReqBody>,
    /// Cap on what the server may answer (`None`: `--plain-http`).
    pub(super) max_response: Option<u64>,
}

impl HttpUpstream {
    /// `base` is where `/mcp/<route>` maps to, e.g. `http://127.0.0.1:8000/mcp`.
    pub fn new(base: &str) -> Result<HttpUpstream, AgentError> {
        let bad = |reason: &str| AgentError::UpstreamUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad("only http:// local servers are supported"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpUpstream {
            base: url,
            client,
            max_response: None,
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The local URL for a path below the route: never above the base
    /// (a path with a dot segment, or not starting with `/`, is refused
    /// whatever the gate said).
    fn target(&self, path_and_query: &str) -> Result<String, route_path::PathRefusal> {
        let path_only = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        route_path::check_path(path_only)?;
        if !path_and_query.starts_with('/') {
            return Err(route_path::PathRefusal::NotAbsolute(
                path_and_query.to_owned(),
            ));
        }
        let base = self.base.as_str();
        let (base_path, base_query) = match base.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (base, None),
        };
        let base_path = base_path.trim_end_matches('/');
        let mut target = if path_and_query == "/" {
            base_path.to_owned()
        } else if let Some(q) = path_and_query.strip_prefix("/?") {
            format!("{base_path}?{q}")
        } else {
            format!("{base_path}{path_and_query}")
        };
        if let (Some(q), false) = (base_query, target.contains('?')) {
            target.push('?');
            target.push_str(q);
        }
        if target.ends_with("://")
            || !target[target.find("://").map_or(0, |i| i + 3)..].contains('/')
        {
            target.push('/');
        }
        // Read back as a URL: the same server, and a path within the base's.
        let within = url::Url::parse(&target).is_ok_and(|t| {
            t.origin() == self.base.origin()
                && t.path().starts_with(self.base.path().trim_end_matches('/'))
        });
        if !within {
            return Err(route_path::PathRefusal::NotAbsolute(
                path_and_query.to_owned(),
            ));
        }
        Ok(target)
    }

    /// Forwards `head` and its body to the local server and streams its
    /// answer into `send`.
    pub async fn serve(
        &self,
        head: ExchangeHead,
        mut send: SendHalf,
        body: ReqBody,
        tap: Option<&Tap>,
    ) {
        let target = match self.target(&head.path) {
            Ok(t) => t,
            Err(refusal) => {
                tracing::warn!(request_id = head.request_id, path = head.path, %refusal, "refused a path that would leave the local server's base");
                let msg = refusal.to_string();
                return reply_error(&mut send, refusal.status(), refusal.code(), &msg, tap).await;
            }
        };
        let req = match request(&head, body, &target) {
            Ok(r) => r,
            Err((status, code, msg)) => {
                return reply_error(&mut send, status, code, msg, tap).await
            }
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = head.request_id, upstream = %self.base, error = %e, "local server unreachable");
                let msg = format!(
                    "the agent could not reach the local server at {}: {}",
                    self.base,
                    error_chain(&e)
                );
                return reply_error(
                    &mut send,
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    &msg,
                    tap,
                )
                .await;
            }
        };
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let cap = ResponseCap::for_response(self.max_response, content_type);
        if let (ResponseCap::Whole(max), Some(len)) =
            (cap, http_body::Body::size_hint(resp.body()).exact())
        {
            if len > max {
                tracing::warn!(request_id = head.request_id, upstream = %self.base, len, max, "the local server's answer is over --max-response");
                let msg = format!(
                    "the local MCP server answered with {len} bytes, over the agent's --max-response of {max}"
                );
                return reply_error(
                    &mut send,
                    StatusCode::BAD_GATEWAY,
                    "response_too_large",
                    &msg,
                    tap,
                )
                .await;
            }
        }
        send_capped(&head.request_id, &mut send, resp, cap, tap).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_base_and_path() {
        let u = HttpUpstream::new("http://127.0.0.1:8000/mcp").expect("url");
        let t = |u: &HttpUpstream, p: &str| u.target(p).expect(p);
        assert_eq!(t(&u, "/"), "http://127.0.0.1:8000/mcp");
        assert_eq!(t(&u, "/x/y?z=1"), "http://127.0.0.1:8000/mcp/x/y?z=1");
        assert_eq!(t(&u, "/?a=b"), "http://127.0.0.1:8000/mcp?a=b");
        let root = HttpUpstream::new("http://127.0.0.1:8000").expect("url");
        assert_eq!(t(&root, "/"), "http://127.0.0.1:8000/");
        assert_eq!(t(&root, "/sse"), "http://127.0.0.1:8000/sse");
        assert!(HttpUpstream::new("https://x").is_err());
        assert!(HttpUpstream::new("not a url").is_err());
    }

    #[test]
    fn no_target_climbs_above_the_base() {
        let u = HttpUpstream::new("http://127.0.0.1:8000/api/v1").expect("url");
        for bad in [
            "/../admin",
            "/%2e%2e/admin",
            "/x/..%2f..%2fadmin",
            "@evil.example/x",
            "",
            "?q=1",
        ] {
            assert!(u.target(bad).is_err(), "{bad}");
        }
        let root = HttpUpstream::new("http://127.0.0.1:8000").expect("url");
        assert!(root.target("@evil.example/x").is_err());
        assert!(root.target(".evil.example/x").is_err());
        // A double slash stays on the local server, below the base.
        assert_eq!(
            u.target("//evil.example/x").expect("double slash"),
            "http://127.0.0.1:8000/api/v1//evil.example/x"
        );
    }
}
