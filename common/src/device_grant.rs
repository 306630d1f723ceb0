//! The device authorization grant (RFC 8628) of `agent login`: what the
//! agent sends and the relay expects.

/// The client id of `agent login` (a public client every relay knows).
pub const AGENT_CLIENT_ID: &str = "drawbridge-agent";
/// RFC 8628 §3.4.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
