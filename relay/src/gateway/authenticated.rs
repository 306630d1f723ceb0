//! Who is calling a route, as the bearer token says: what the gateway's
//! authentication yields and the later steps (the legacy SSE transport among
//! them) read.

use protocol::IdentityKind;

use crate::oauth::scope::Access;

/// Who is calling, as the bearer token says.
pub struct Authenticated {
    /// The identity (an email address).
    pub subject: String,
    /// The client: a client token's name, or the OAuth client id.
    pub client_id: String,
    pub kind: IdentityKind,
    /// The groups the upstream identity provider gave the subject at its
    /// latest sign-in (the store's `Users::groups`); none for client tokens.
    pub groups: Vec<String>,
    /// What the token's scope allows (client tokens: everything).
    pub access: Access,
}
