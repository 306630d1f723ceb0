//! Discovery: protected-resource metadata (RFC 9728), authorization-server
//! metadata (RFC 8414), and the `WWW-Authenticate` challenge that points a
//! client at them.

use crate::state::RelayState;

use super::scope;

/// Where the protected-resource metadata of `route` lives (path-inserted form).
pub fn resource_metadata_url(state: &RelayState, route: &str) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource/mcp/{route}",
        state.public_url
    )
}

/// Protected-resource metadata: of a route, or (root form) of the relay.
pub fn protected_resource(state: &RelayState, route: Option<&str>) -> serde_json::Value {
    let (resource, name) = match route {
        Some(r) => (state.route_url(r), format!("Drawbridge route {r}")),
        None => (state.public_url.clone(), "Drawbridge relay".to_owned()),
    };
    serde_json::json!({
        "resource": resource,
        "authorization_servers": [state.issuer()],
        "scopes_supported": scope::SUPPORTED,
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    })
}

/// Authorization-server metadata (also served at the OpenID discovery path).
pub fn authorization_server(state: &RelayState) -> serde_json::Value {
    let issuer = state.issuer();
    serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "registration_endpoint": format!("{issuer}/oauth/register"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        // Not the device grant: it serves `agent login` (client id
        // "drawbridge-agent") only, and a client that reads it here would
        // register for it and be refused (`mcp-remote --device-code`).
        "scopes_supported": scope::SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": state.oauth.cimd.enabled(),
    })
}

/// The `WWW-Authenticate` value of a 401 from `route`; `error` when a token
/// was presented (RFC 6750 §3).
pub fn challenge(state: &RelayState, route: &str, error: Option<(&str, &str)>) -> String {
    let mut c = format!(
        "Bearer realm=\"drawbridge\", resource_metadata=\"{}\", scope=\"{}\"",
        resource_metadata_url(state, route),
        scope::SUPPORTED.join(" ")
    );
    if let Some((code, description)) = error {
        c.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            description.replace(['"', '\\'], "'")
        ));
    }
    c
}

/// The `WWW-Authenticate` value of a 403 for a token whose scope is too
/// narrow: the scope to ask for (step-up; RFC 6750 §3.1, MCP authorization
/// "Scope Challenge Handling").
pub fn step_up_challenge(
    state: &RelayState,
    route: &str,
    needed: &str,
    description: &str,
) -> String {
    format!(
        "Bearer error=\"insufficient_scope\", scope=\"{needed}\", resource_metadata=\"{}\", error_description=\"{}\"",
        resource_metadata_url(state, route),
        description.replace(['"', '\\'], "'")
    )
}
