//! Resource indicators (RFC 8707): a token is for exactly one route, named
//! by the route's canonical URL.

/// The route a `resource` parameter names, and its canonical URL. A
/// trailing slash is tolerated (some clients add one); anything else must
/// match exactly. `public_url` is the relay's (`RelayState::public_url`).
pub fn route_of(public_url: &str, resource: &str) -> Option<(String, String)> {
    let trimmed = resource.strip_suffix('/').unwrap_or(resource);
    let prefix = format!("{public_url}/mcp/");
    let route = trimmed.strip_prefix(&prefix)?;
    protocol::validate_route_name(route).ok()?;
    Some((route.to_owned(), format!("{prefix}{route}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_route_urls_of_this_relay_are_resources() {
        let state = "https://relay.example";
        let ok = Some(("db".to_owned(), "https://relay.example/mcp/db".to_owned()));
        assert_eq!(route_of(state, "https://relay.example/mcp/db"), ok);
        assert_eq!(route_of(state, "https://relay.example/mcp/db/"), ok);
        for bad in [
            "https://relay.example",
            "https://relay.example/",
            "https://relay.example/mcp/",
            "https://relay.example/mcp/db//",
            "https://relay.example/mcp/db/x",
            "https://relay.example/mcp/db?x=1",
            "https://other.example/mcp/db",
            "http://relay.example/mcp/db",
            "https://relay.example.evil/mcp/db",
        ] {
            assert_eq!(route_of(state, bad), None, "{bad}");
        }
    }
}
