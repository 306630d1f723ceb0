//! Which HTTP requests a route takes at all, before any policy reads them:
//! the method and the path below the route (`/mcp/<route><path>`). The
//! relay checks this on every request and the agent again on every exchange
//! (a relay that forgets, or an old one, cannot reach the local server with
//! anything else).
//!
//! * On every route, a path with a dot segment (`.` or `..`, also
//!   percent-encoded, e.g. `%2e%2e`, hidden behind an encoded `/` or `\`
//!   such as `..%2f`, or followed by `;parameters` as in `..;`) is
//!   refused: no request may climb above the route's base on the local
//!   server.
//! * An MCP route (`--sqlite`, `--http` without `--plain-http`, a stdio
//!   server) is the route's own URL: `POST`, `GET` and `DELETE` on it, and
//!   nothing below it. (The relay answers CORS preflights itself.)
//! * A plain HTTP route takes any method and path (within the first rule),
//!   except that a caller who may only read (a token with the `mcp:read`
//!   scope, or whose access rests on read-only grants only, see
//!   [`rests_on_read_only_grants`]) may only use the safe methods
//!   ([`is_safe`]).

use http::StatusCode;

use crate::engine::{Decision, ORG_PREFIX};

/// The methods an MCP route takes, as an `Allow` header lists them.
pub const MCP_METHODS: &str = "GET, POST, DELETE";

/// Why a request was refused for its method or path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    /// The path does not start with `/`.
    #[error("the path {0:?} does not start with '/'")]
    NotAbsolute(String),
    /// The path holds a `.` or `..` segment, maybe percent-encoded.
    #[error(
        "the path {0:?} holds a dot segment ('.' or '..', maybe percent-encoded); \
         no route takes one"
    )]
    DotSegment(String),
    /// A path below an MCP route.
    #[error(
        "an MCP route's endpoint is the route's own URL (/mcp/<route>); \
         nothing is served below it ({0:?})"
    )]
    BelowMcpRoute(String),
    /// A method an MCP route does not take.
    #[error("an MCP route takes only POST, GET and DELETE, not {0}")]
    McpMethod(String),
    /// An unsafe method on a plain HTTP route from a caller who may only read.
    #[error("{0} on a plain HTTP route: this caller may only read (GET, HEAD, OPTIONS)")]
    ReadOnly(String),
}

impl PathRefusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            PathRefusal::NotAbsolute(_) | PathRefusal::DotSegment(_) => StatusCode::BAD_REQUEST,
            PathRefusal::BelowMcpRoute(_) => StatusCode::NOT_FOUND,
            PathRefusal::McpMethod(_) => StatusCode::METHOD_NOT_ALLOWED,
            PathRefusal::ReadOnly(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The `error` code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            PathRefusal::NotAbsolute(_) => "bad_path",
            PathRefusal::DotSegment(_) => "dot_segment",
            PathRefusal::BelowMcpRoute(_) => "not_found",
            PathRefusal::McpMethod(_) => "method_not_allowed",
            PathRefusal::ReadOnly(_) => "read_only",
        }
    }

    /// The rule an audit line names.
    pub fn rule(&self) -> &'static str {
        match self {
            PathRefusal::NotAbsolute(_) => "path-not-absolute",
            PathRefusal::DotSegment(_) => "path-dot-segment",
            PathRefusal::BelowMcpRoute(_) => "path-below-mcp-route",
            PathRefusal::McpMethod(_) => "mcp-method",
            PathRefusal::ReadOnly(_) => "read-only-method",
        }
    }
}

/// Whether `method` only reads (RFC 9110 §9.2.1, without TRACE).
pub fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Checks a request to a route: `mcp` for an MCP route, `method`, and
/// `path` below the route with its query, if any (`""` or `"/"` is the
/// route itself).
pub fn admit(mcp: bool, method: &str, path: &str) -> Result<(), PathRefusal> {
    let path_only = path.split_once('?').map_or(path, |(p, _)| p);
    check_path(path_only)?;
    if mcp {
        if !path_only.is_empty() && path_only != "/" {
            return Err(PathRefusal::BelowMcpRoute(path_only.to_owned()));
        }
        if !matches!(method, "POST" | "GET" | "DELETE") {
            return Err(PathRefusal::McpMethod(method.to_owned()));
        }
    }
    Ok(())
}

/// Checks a path (without its query): empty or starting with `/`, and no
/// dot segment however it is written.
pub fn check_path(path: &str) -> Result<(), PathRefusal> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(PathRefusal::NotAbsolute(path.to_owned()));
    }
    if path.split('/').any(is_dot_segment) {
        return Err(PathRefusal::DotSegment(path.to_owned()));
    }
    Ok(())
}

/// Decoding rounds tried on one segment (`%252e` is `%2e` decoded once).
const DECODE_ROUNDS: usize = 4;

/// Whether a segment is, or decodes to something holding, `.` or `..` as a
/// segment (split on `/` and `\` once decoded, as some servers do; with
/// `;parameters` removed, as Tomcat and others do).
fn is_dot_segment(segment: &str) -> bool {
    let mut current = segment.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        if current
            .split(|b| *b == b'/' || *b == b'\\')
            // `..;x` is `..` to servers that take `;` for path parameters.
            .map(|piece| piece.split(|b| *b == b';').next().unwrap_or_default())
            .any(|piece| piece == b"." || piece == b"..")
        {
            return true;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    // Still changing after every round: nobody writes paths like that.
    true
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Whether an allowed decision rests only on read-only grants: every permit
/// of the owner's layer that allowed it is the `grant-<id>` permit of a
/// grant in `read_only_grants` (ids of grants made with `--read-only`).
/// Such a caller may only read a plain HTTP route. A caller whom the owner's
/// own policy allows, or any grant that is not read-only, is not limited.
pub fn rests_on_read_only_grants(decision: &Decision, read_only_grants: &[&str]) -> bool {
    if !decision.allowed {
        return false;
    }
    let mut owner_permits = decision
        .policies
        .iter()
        .filter(|p| !p.starts_with(ORG_PREFIX))
        .peekable();
    owner_permits.peek().is_some()
        && owner_permits.all(|p| {
            p.strip_prefix("grant-")
                .is_some_and(|id| read_only_grants.contains(&id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_however_written() {
        for bad in [
            "/..",
            "/.",
            "/a/../b",
            "/a/./b",
            "/%2e%2e/x",
            "/%2E%2e",
            "/.%2e/x",
            "/%2e./x",
            "/%2e",
            "/a/..%2fb",
            "/a/..%2Fb",
            "/a/%2e%2e%5cb",
            "/a/..\\b",
            "/%252e%252e/x",
            "/%25252e%25252e",
            "/..;/admin",
            "/a/.;x/b",
            "/%2e%2e%3b/admin",
        ] {
            assert!(
                matches!(check_path(bad), Err(PathRefusal::DotSegment(_))),
                "{bad}"
            );
        }
        for ok in [
            "",
            "/",
            "/a/b",
            "/a.b/c",
            "/...",
            "/a/.well-known",
            "/.hidden",
            "/a%2fb",
            "/%",
            "/%2",
            "/x%zz",
            "//double",
            "/a;b/c",
            "/...;x",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            check_path("a/b"),
            Err(PathRefusal::NotAbsolute(_))
        ));
        assert!(matches!(
            check_path("@evil.example/x"),
            Err(PathRefusal::NotAbsolute(_))
        ));
    }

    #[test]
    fn mcp_routes_take_three_methods_on_their_own_url() {
        for method in ["POST", "GET", "DELETE"] {
            for path in ["", "/", "/?session_id=ab", "?x=1"] {
                assert_eq!(admit(true, method, path), Ok(()), "{method} {path}");
            }
        }
        for method in [
            "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "post",
        ] {
            let refused = admit(true, method, "/").expect_err(method);
            assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        }
        for path in ["/anything", "/echo?x=1", "//", "/.well-known/x"] {
            let refused = admit(true, "POST", path).expect_err(path);
            assert_eq!(
                refused,
                PathRefusal::BelowMcpRoute(path.split('?').next().unwrap_or_default().to_owned())
            );
            assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        }
        let refused = admit(true, "POST", "/%2e%2e/x").expect_err("dots");
        assert_eq!(refused.code(), "dot_segment");
    }

    #[test]
    fn plain_routes_take_anything_without_dot_segments() {
        for method in ["PUT", "PATCH", "HEAD", "OPTIONS", "PROPFIND"] {
            assert_eq!(admit(false, method, "/a/b?c=../d"), Ok(()));
        }
        assert!(admit(false, "GET", "/a/%2e%2e/b").is_err());
        assert!(is_safe("GET") && is_safe("HEAD") && is_safe("OPTIONS"));
        assert!(!is_safe("POST") && !is_safe("DELETE") && !is_safe("get"));
    }

    #[test]
    fn read_only_grants_are_told_apart() {
        let allowed = |ids: &[&str]| Decision {
            allowed: true,
            policies: ids.iter().map(|s| s.to_string()).collect(),
            errors: Vec::new(),
        };
        assert!(rests_on_read_only_grants(&allowed(&["grant-ab"]), &["ab"]));
        assert!(rests_on_read_only_grants(
            &allowed(&["grant-ab", "grant-cd", "org/permit-all"]),
            &["ab", "cd"]
        ));
        // A grant that is not read-only, or the owner's own permit.
        assert!(!rests_on_read_only_grants(
            &allowed(&["grant-ab", "grant-cd"]),
            &["ab"]
        ));
        assert!(!rests_on_read_only_grants(
            &allowed(&["grant-ab", "owner"]),
            &["ab"]
        ));
        assert!(!rests_on_read_only_grants(&allowed(&[]), &["ab"]));
        let mut denied = allowed(&["grant-ab"]);
        denied.allowed = false;
        assert!(!rests_on_read_only_grants(&denied, &["ab"]));
    }
}
