//! Token revocation (RFC 7009): `POST /oauth/revoke`.
//!
//! Revoking a refresh token ends its whole grant (the access tokens issued
//! with it too); revoking an access token ends that token. Unknown tokens
//! and tokens of other clients get the same 200, so the endpoint tells
//! nothing about tokens the caller does not hold.

use http::{Response, StatusCode};

use crate::http::body::RespBody;
use crate::metrics::OAuthEvent;
use crate::state::SharedState;
use crate::store::oauth::OAuthTokenKind;

use super::{json, oauth_error, Params};

/// `POST /oauth/revoke`.
pub async fn revoke(state: &SharedState, form: &Params) -> Response<RespBody> {
    let Some(presented) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let Some(client_id) = form.get("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id is required (public clients identify themselves)",
        );
    };
    match state.store.client(client_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!("no client {client_id:?} is registered on this relay"),
            )
        }
        Err(e) => return failed(e),
    }
    let record = match state.store.oauth_token(presented).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if let Some(t) = record.filter(|t| t.client_id == client_id) {
        let result = match t.kind {
            OAuthTokenKind::Refresh => state.store.revoke_family(&t.family).await,
            OAuthTokenKind::Access => state.store.revoke_oauth_token(&t.id).await,
        };
        if let Err(e) = result {
            return failed(e);
        }
        state.metrics.oauth(OAuthEvent::token_revoked);
        tracing::info!(client_id, email = t.email, kind = ?t.kind, "OAuth token revoked");
    }
    json(StatusCode::OK, &serde_json::json!({}))
}

fn failed(e: impl std::fmt::Display) -> Response<RespBody> {
    tracing::error!(error = %e, "OAuth state store failed");
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "the relay's state store failed",
    )
}
