//! The OAuth scopes of a route's tokens.
//!
//! * `mcp` — everything the route's policy allows the person (the default
//!   when a client asks for no scope).
//! * `mcp:read` — only what reads ([`policy::reading`]): the session, the
//!   lists, resources, prompts and read-only tool calls. Anything else is
//!   refused with 403 `insufficient_scope` naming `mcp`, and the client asks
//!   again (step-up).
//!
//! `mcp` includes `mcp:read`: a grant of `mcp` covers a request for either.

/// The full scope.
pub const FULL: &str = "mcp";
/// The read-only scope.
pub const READ: &str = "mcp:read";
/// Every scope, narrowest first (the order they are advertised in).
pub const SUPPORTED: [&str; 2] = [READ, FULL];

/// What a token may do on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `mcp:read`: only reading messages.
    Read,
    /// `mcp`: whatever the policy allows.
    Full,
}

/// The scope strings of a space-separated list.
fn words(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}

/// A requested scope in canonical form: known scopes only, each once,
/// narrowest first. Nothing requested means the default, `mcp`. The error
/// names the first unknown scope.
pub fn normalize(requested: Option<&str>) -> Result<String, String> {
    let Some(requested) = requested else {
        return Ok(FULL.to_owned());
    };
    if let Some(bad) = words(requested).find(|s| !SUPPORTED.contains(s)) {
        return Err(bad.to_owned());
    }
    let kept: Vec<&str> = SUPPORTED
        .into_iter()
        .filter(|s| words(requested).any(|r| r == *s))
        .collect();
    if kept.is_empty() {
        return Ok(FULL.to_owned());
    }
    Ok(kept.join(" "))
}

/// What a granted scope lets a token do; `None` if it holds neither scope.
pub fn access(granted: &str) -> Option<Access> {
    if words(granted).any(|s| s == FULL) {
        Some(Access::Full)
    } else if words(granted).any(|s| s == READ) {
        Some(Access::Read)
    } else {
        None
    }
}

/// Whether `granted` covers every scope of `requested` (`mcp` covers
/// `mcp:read`).
pub fn covers(granted: &str, requested: &str) -> bool {
    words(requested)
        .all(|r| words(granted).any(|g| g == r) || (r == READ && words(granted).any(|g| g == FULL)))
}

/// What a scope means, for the consent page.
pub fn describe(scope: &str) -> &'static str {
    match scope {
        READ => "read only: list and read, and call only tools that read (no writes)",
        FULL => "full use: call the route's tools, reading and writing, within its policy",
        _ => "unknown scope",
    }
}

/// Every scope of `granted` with what it means, for the consent page.
pub fn described(granted: &str) -> Vec<(&str, &'static str)> {
    words(granted).map(|s| (s, describe(s))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_scopes_are_made_canonical() {
        assert_eq!(normalize(None).as_deref(), Ok("mcp"));
        assert_eq!(normalize(Some("")).as_deref(), Ok("mcp"));
        assert_eq!(normalize(Some("mcp")).as_deref(), Ok("mcp"));
        assert_eq!(normalize(Some("mcp:read")).as_deref(), Ok("mcp:read"));
        assert_eq!(
            normalize(Some("mcp mcp:read  mcp")).as_deref(),
            Ok("mcp:read mcp")
        );
        assert_eq!(normalize(Some("mcp admin")), Err("admin".to_owned()));
        assert_eq!(normalize(Some("MCP")), Err("MCP".to_owned()));
    }

    #[test]
    fn full_includes_read() {
        assert_eq!(access("mcp"), Some(Access::Full));
        assert_eq!(access("mcp:read mcp"), Some(Access::Full));
        assert_eq!(access("mcp:read"), Some(Access::Read));
        assert_eq!(access("openid"), None);
        assert!(covers("mcp", "mcp:read"));
        assert!(covers("mcp", "mcp"));
        assert!(covers("mcp:read mcp", "mcp:read mcp"));
        assert!(covers("mcp:read", "mcp:read"));
        assert!(!covers("mcp:read", "mcp"));
        assert!(!covers("mcp:read", "mcp:read mcp"));
        assert!(!covers("mcp", "mcp admin"));
    }
}
