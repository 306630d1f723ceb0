//! Phase 1: who is asking. Before it, what is refused whoever asks: a relay
//! that cannot audit, a browser from a foreign `Origin`.

use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use http::request::Parts;
use protocol::IdentityKind;

use super::Refusal;
use crate::gateway::authenticated::Authenticated;
use crate::oauth::scope::{self, Access};
use crate::state::SharedState;
use crate::store::oauth as oauth_store;
use crate::store::proof::Proof;
use crate::store::token::TokenKind;
use crate::store::TokenRejection;

/// Refuses every request while the audit log cannot be written, and a
/// browser's request from an `Origin` not allowed (see cors.rs, origin.rs).
pub fn admit(state: &SharedState, parts: &Parts) -> Result<(), Refusal> {
    if !state.audit.healthy() {
        return Err(Refusal::AuditUnavailable);
    }
    if let Some(shown) = state.origins.refused(&parts.headers) {
        return Err(Refusal::Origin(shown));
    }
    Ok(())
}

/// Checks the bearer token: a client token, or an OAuth access token issued
/// for exactly this route.
pub async fn authenticate(
    state: &SharedState,
    headers: &http::HeaderMap,
    route: &str,
    proof: Proof,
) -> Result<Authenticated, Refusal> {
    let refuse = |code: &'static str, text: String| Refusal::Unauthenticated(Some((code, text)));
    // `Bearer <token>`, the scheme in any case; nothing else is a token.
    let bearer = match headers.typed_try_get::<Authorization<Bearer>>() {
        Ok(Some(Authorization(bearer))) => bearer,
        Ok(None) => return Err(Refusal::Unauthenticated(None)),
        Err(_) => {
            return Err(refuse(
                "invalid_request",
                "the Authorization header must be 'Bearer <token>'".into(),
            ))
        }
    };
    let presented = bearer.token().trim();
    if presented.starts_with(oauth_store::ACCESS_PREFIX) {
        let record = match state.store.verify_access_proven(presented, proof).await {
            Ok(checked) => checked,
            Err(e) => {
                tracing::error!(error = %e, "OAuth token lookup failed");
                Err(unreadable(state)?)
            }
        }
        .map_err(|rejection| refuse("invalid_token", rejection.to_string()))?;
        // The token's audience is one route (RFC 8707): never another.
        if record.resource != state.route_url(route) {
            return Err(refuse(
                "invalid_token",
                "the token was issued for another resource".into(),
            ));
        }
        let groups = state
            .store
            .groups_proven(&record.email, proof)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "groups lookup failed");
                unreadable(state).err().unwrap_or(Refusal::TokenUncheckable)
            })?;
        let Some(access) = scope::access(&record.scope) else {
            return Err(refuse(
                "invalid_token",
                "the token holds no scope of this relay".into(),
            ));
        };
        return Ok(Authenticated {
            subject: record.email,
            client_id: record.client_id,
            kind: IdentityKind::OAuth,
            // As the tunnel carries them (the agent decides on the same).
            groups: protocol::bounded_groups(groups),
            access,
        });
    }
    let record = match state.store.verify_proven(presented, proof).await {
        Ok(checked) => checked,
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            Err(unreadable(state)?)
        }
    }
    .map_err(|rejection| refuse("invalid_token", rejection.to_string()))?;
    if record.kind != TokenKind::Client {
        return Err(refuse(
            "invalid_token",
            "an agent token cannot call routes; create a client token with `relay token create --client`".into(),
        ));
    }
    Ok(Authenticated {
        subject: record.owner,
        client_id: record.name,
        kind: IdentityKind::ClientToken,
        groups: Vec::new(),
        access: Access::Full,
    })
}

/// A token whose record cannot be read: on a database on the network, the
/// request is refused 503 ([`Refusal::StoreUnavailable`]); on SQLite, as
/// always, the token counts as unknown.
fn unreadable(state: &SharedState) -> Result<TokenRejection, Refusal> {
    if state.store.is_remote() {
        Err(Refusal::StoreUnavailable)
    } else {
        Ok(TokenRejection::Unknown)
    }
}
