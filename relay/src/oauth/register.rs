//! `POST /oauth/register`: dynamic client registration (RFC 7591) of
//! public clients, within a rate per client address; the metadata rules are
//! [`crate::identity::clients`].

use std::net::SocketAddr;
use std::time::Instant;

use http::{header, HeaderValue, Response, StatusCode};

use crate::http::body::RespBody;
use crate::identity::clients::ClientMetadata;
use crate::metrics::OAuthEvent;
use crate::state::SharedState;
use crate::store::now;
use crate::store::oauth::OAuthClient;
use crate::store::token;

use super::{json, oauth_error, scope};

/// `POST /oauth/register`.
pub async fn register(state: &SharedState, peer: SocketAddr, body: &[u8]) -> Response<RespBody> {
    if let Err(wait) = state
        .oauth
        .registrations
        .check(peer.ip().to_canonical(), Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let mut resp = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            &format!("too many client registrations from this address; retry in {secs}s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let meta = match ClientMetadata::parse(body) {
        Ok(m) => m,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e.code, &e.description),
    };
    let ClientMetadata {
        redirect_uris,
        grant_types,
        client_name,
    } = meta;
    let client = OAuthClient {
        client_id: format!("dbc_{}", token::random_hex(16)),
        client_name,
        redirect_uris,
        created_at: now(),
    };
    if let Err(e) = state.store.insert_client(&client).await {
        tracing::error!(error = %e, "storing an OAuth client failed");
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the relay's state store failed",
        );
    }
    tracing::info!(client_id = client.client_id, name = ?client.client_name, %peer, "OAuth client registered");
    let mut out = serde_json::json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at,
        "redirect_uris": client.redirect_uris,
        "token_endpoint_auth_method": "none",
        "grant_types": grant_types,
        "response_types": ["code"],
        "scope": scope::SUPPORTED.join(" "),
    });
    if let Some(n) = &client.client_name {
        out["client_name"] = serde_json::Value::String(n.clone());
    }
    state.metrics.oauth(OAuthEvent::client_registered);
    json(StatusCode::CREATED, &out)
}
