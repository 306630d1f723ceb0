//! The token endpoint (`POST /oauth/token`): authorization codes (with PKCE)
//! and refresh tokens (rotated on every use; a reused one revokes its whole
//! family) are exchanged for an access token bound to one route; device
//! codes (`agent login`, see [`device`]) for an agent credential.

use std::net::IpAddr;

use http::{Response, StatusCode};

use crate::http::body::RespBody;
use crate::identity::cimd;
use crate::metrics::OAuthEvent;
use crate::state::SharedState;
use crate::store::now;
use crate::store::oauth::{
    CodeRedemption, IssuedTokens, OAuthClient, RefreshOutcome, RefreshVerdict, Refusal, TokenTtl,
};

use super::{client_lookup, device, json, oauth_error, pkce, resource, Params};

/// `POST /oauth/token`.
/// A client given by URL has its metadata document fetched (or taken from
/// the cache) first; a document that cannot be used is `invalid_client`.
/// `peer` pays for a fetch (see [`cimd`]).
pub async fn token(state: &SharedState, peer: IpAddr, form: &Params) -> Response<RespBody> {
    if form.get("grant_type") == Some(device::GRANT_TYPE) && form.repeated().is_none() {
        return match device::exchange(state, form).await {
            Ok(answer) => json(StatusCode::OK, &answer),
            Err(e) => e.response(),
        };
    }
    let found = match form.get("client_id") {
        Some(id) => client_lookup::find_client(state, peer, id).await,
        None => Ok(None),
    };
    let outcome = exchange(state, form, found).await;
    state
        .metrics
        .oauth(match (&outcome, form.get("grant_type")) {
            (Ok(_), Some("refresh_token")) => OAuthEvent::token_refreshed,
            (Ok(_), _) => OAuthEvent::token_issued,
            (Err(_), _) => OAuthEvent::token_refused,
        });
    match outcome {
        Ok(issued) => json(
            StatusCode::OK,
            &serde_json::json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "refresh_token": issued.refresh_token,
                "scope": issued.scope,
            }),
        ),
        Err(e) => e.response(),
    }
}

/// An RFC 6749 §5.2 error.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenError {
    pub code: &'static str,
    pub description: String,
}

impl TokenError {
    pub fn new(code: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            code,
            description: description.into(),
        }
    }

    fn response(&self) -> Response<RespBody> {
        let status = match self.code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            // Too many client metadata documents fetched for the caller.
            "temporarily_unavailable" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        oauth_error(status, self.code, &self.description)
    }
}

fn store_error(e: impl std::fmt::Display) -> TokenError {
    tracing::error!(error = %e, "OAuth state store failed");
    TokenError::new("server_error", "the relay's state store failed")
}

async fn exchange(
    state: &SharedState,
    form: &Params,
    found: Result<Option<OAuthClient>, cimd::LookupError>,
) -> Result<IssuedTokens, TokenError> {
    if let Some(p) = form.repeated() {
        return Err(TokenError::new(
            "invalid_request",
            format!("the parameter {p:?} is given more than once"),
        ));
    }
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| TokenError::new("invalid_request", "grant_type is required"))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token") {
        return Err(TokenError::new(
            "unsupported_grant_type",
            format!(
                "grant_type {grant_type:?} is not supported (authorization_code, refresh_token, {})",
                device::GRANT_TYPE
            ),
        ));
    }
    if form.get("client_secret").is_some() {
        return Err(TokenError::new(
            "invalid_client",
            "clients of this relay are public: they authenticate with PKCE, not a client_secret",
        ));
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| TokenError::new("invalid_request", "client_id is required"))?;
    let client = match found {
        Ok(c) => c,
        Err(cimd::LookupError::Store(e)) => return Err(store_error(e)),
        Err(cimd::LookupError::Document(e)) => {
            return Err(TokenError::new("invalid_client", e.to_string()))
        }
        Err(cimd::LookupError::Limited(e)) => {
            return Err(TokenError::new("temporarily_unavailable", e.to_string()))
        }
    }
    .ok_or_else(|| {
        TokenError::new(
            "invalid_client",
            format!("no client {client_id:?} is registered on this relay"),
        )
    })?;
    // A resource, when given, must name the grant's route (RFC 8707 §2.2).
    let resource = match form.get("resource") {
        None => None,
        Some(r) => Some(
            resource::route_of(&state.public_url, r)
                .map(|(_, url)| url)
                .ok_or_else(|| {
                    TokenError::new(
                        "invalid_target",
                        format!("resource {r:?} is not a route of this relay"),
                    )
                })?,
        ),
    };
    let ttl = TokenTtl {
        access: state.config.access_token_ttl.as_secs() as i64,
        refresh: state.config.refresh_token_ttl.as_secs() as i64,
    };

    if grant_type == "authorization_code" {
        let code = form
            .get("code")
            .ok_or_else(|| TokenError::new("invalid_request", "code is required"))?;
        let verifier = form.get("code_verifier").ok_or_else(|| {
            TokenError::new("invalid_request", "code_verifier is required (PKCE)")
        })?;
        let redirect_uri = form
            .get("redirect_uri")
            .ok_or_else(|| TokenError::new("invalid_request", "redirect_uri is required"))?;
        let check: crate::store::oauth::CodeCheck = {
            let client_id = client.client_id.clone();
            let (verifier, redirect_uri) = (verifier.to_owned(), redirect_uri.to_owned());
            let resource = resource.clone();
            Box::new(move |code| {
                if code.expires_at <= now() {
                    return Err(Refusal::new(
                        "invalid_grant",
                        "the authorization code has expired",
                    ));
                }
                if code.client_id != client_id {
                    return Err(Refusal::new(
                        "invalid_grant",
                        "the authorization code was issued to another client",
                    ));
                }
                // Identical to the authorization request's (RFC 6749 §4.1.3).
                if code.redirect_uri != redirect_uri {
                    return Err(Refusal::new(
                        "invalid_grant",
                        "redirect_uri differs from the one of the authorization request",
                    ));
                }
                if !pkce::verify(&verifier, &code.code_challenge) {
                    return Err(Refusal::new(
                        "invalid_grant",
                        "PKCE verification failed: code_verifier does not match the code_challenge",
                    ));
                }
                if resource.as_ref().is_some_and(|r| *r != code.resource) {
                    return Err(Refusal::new(
                        "invalid_target",
                        "resource differs from the one of the authorization request",
                    ));
                }
                Ok(())
            })
        };
        // Redemption, checks and issue are one transaction: of concurrent
        // redemptions exactly one gets tokens, and a replay revokes them.
        let (code, issued) = match state
            .store
            .redeem_code(code, check, ttl)
            .await
            .map_err(store_error)?
        {
            CodeRedemption::Issued(code, issued) => (code, issued),
            CodeRedemption::Refused(r) => return Err(TokenError::new(r.error, r.description)),
            CodeRedemption::Replayed => {
                tracing::warn!(
                    client_id,
                    "authorization code replayed; its tokens are revoked"
                );
                return Err(TokenError::new(
                    "invalid_grant",
                    "the authorization code was already used; tokens issued from it are revoked",
                ));
            }
            CodeRedemption::Unknown => {
                return Err(TokenError::new(
                    "invalid_grant",
                    "the authorization code is not known to this relay",
                ))
            }
        };
        tracing::info!(
            email = code.email,
            client_id,
            resource = code.resource,
            "OAuth tokens issued"
        );
        return Ok(issued);
    }

    // refresh_token
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| TokenError::new("invalid_request", "refresh_token is required"))?;
    let check: crate::store::oauth::RefreshCheck = {
        let client_id = client.client_id.clone();
        let resource = resource.clone();
        let asked = form.get("scope").map(str::to_owned);
        Box::new(move |old| {
            if old.client_id != client_id {
                return RefreshVerdict::Refuse(Refusal::new(
                    "invalid_grant",
                    "the refresh token was issued to another client",
                ));
            }
            if old.rotated_at.is_some() {
                // Someone holds a refresh token that was already exchanged: either
                // the client or a thief. Cut both off (OAuth 2.1 §4.3.1).
                tracing::warn!(
                    client_id,
                    email = old.email,
                    "refresh token reused; its family is revoked"
                );
                return RefreshVerdict::RevokeFamily(Refusal::new(
                    "invalid_grant",
                    "the refresh token was already used; every token of this grant is now revoked",
                ));
            }
            if let Err(rejection) = old.check(now()) {
                return RefreshVerdict::Refuse(Refusal::new(
                    "invalid_grant",
                    format!("refresh token: {rejection}"),
                ));
            }
            if resource.as_ref().is_some_and(|r| *r != old.resource) {
                return RefreshVerdict::Refuse(Refusal::new(
                    "invalid_target",
                    "resource differs from the one the grant is for",
                ));
            }
            // The scope may narrow (`mcp` to `mcp:read`), never widen (RFC 6749 §6).
            let scope = match asked {
                None => old.scope.clone(),
                Some(s) => {
                    let narrowed = super::scope::normalize(Some(&s))
                        .ok()
                        .filter(|n| super::scope::covers(&old.scope, n));
                    match narrowed {
                        Some(n) => n,
                        None => {
                            return RefreshVerdict::Refuse(Refusal::new(
                                "invalid_scope",
                                format!("scope {s:?} exceeds the grant's ({})", old.scope),
                            ))
                        }
                    }
                }
            };
            RefreshVerdict::Issue { scope }
        })
    };
    // Rotation and issue are one transaction: of concurrent exchanges of
    // one refresh token exactly one gets a new pair.
    match state
        .store
        .refresh(presented, check, ttl)
        .await
        .map_err(store_error)?
    {
        RefreshOutcome::Issued(issued) => Ok(issued),
        RefreshOutcome::Unknown => Err(TokenError::new(
            "invalid_grant",
            "the refresh token is not known to this relay",
        )),
        RefreshOutcome::Refused(r) => Err(TokenError::new(r.error, r.description)),
        // Lost a race with another exchange of the same token: a reuse.
        RefreshOutcome::Reused(_) => Err(TokenError::new(
            "invalid_grant",
            "the refresh token was already used; every token of this grant is now revoked",
        )),
    }
}
