//! The device authorization grant (RFC 8628) that `agent login` uses:
//!
//! 1. the agent `POST`s `/oauth/device_authorization` (client id
//!    [`AGENT_CLIENT_ID`]) and gets a device code, a user code and
//!    `/device`;
//! 2. the person opens `/device` in a browser, signs in with their account
//!    (the same session cookie and CSRF token as the authorization flow),
//!    checks the code and approves (or denies);
//! 3. meanwhile the agent polls the token endpoint with grant type
//!    [`GRANT_TYPE`], getting `authorization_pending`, `slow_down`,
//!    `access_denied` or `expired_token` (§3.5) until it gets its credential:
//!    an agent token owned by the person's email (as `relay token create
//!    --owner EMAIL` makes), so routes it serves are theirs.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::http::body::RespBody;
use crate::state::SharedState;
use crate::store::oauth::DevicePoll;
use crate::store::token::TokenKind;

use super::sign_in::Verdict;
use super::token_endpoint::TokenError;
use super::{html, json, oauth_error, pages, redirect, session, Params};

pub use common::device_grant::{AGENT_CLIENT_ID, GRANT_TYPE};
/// The letters of user codes: no vowels (no words), none that look alike
/// (RFC 8628 §6.1).
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;

/// A fresh user code (8 letters, `XXXXXXXX`; shown as `XXXX-XXXX`).
fn new_user_code() -> String {
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        let bytes = hex::decode(crate::store::token::random_hex(16)).unwrap_or_default();
        // Rejection sampling: 240 is the largest multiple of 20 under 256.
        for b in bytes.into_iter().filter(|b| *b < 240) {
            if code.len() < USER_CODE_LEN {
                code.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    code
}

/// What a person typed, normalized: letters of the alphabet, uppercased;
/// dashes and spaces dropped. `None` if it cannot be a user code.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// `XXXX-XXXX`.
pub fn display_user_code(code: &str) -> String {
    match code.split_at_checked(USER_CODE_LEN / 2) {
        Some((a, b)) => format!("{a}-{b}"),
        None => code.to_owned(),
    }
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1–3.2).
pub async fn authorization(
    state: &SharedState,
    peer: SocketAddr,
    form: &Params,
) -> Response<RespBody> {
    if let Err(wait) = state
        .oauth
        .device_requests
        .check(peer.ip().to_canonical(), Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let mut resp = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &format!("too many device authorizations from this address; retry in {secs}s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    if let Some(p) = form.repeated() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("the parameter {p:?} is given more than once"),
        );
    }
    match form.get("client_id") {
        Some(AGENT_CLIENT_ID) => {}
        Some(other) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!("the device grant is for `agent login` (client_id {AGENT_CLIENT_ID:?}), not {other:?}"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id is required",
            )
        }
    }
    let ttl = state.config.device_code_ttl.as_secs().max(1) as i64;
    let interval = state.config.device_poll_interval.as_secs().max(1) as i64;
    // A user code in use is retried with another (2.5e10 of them).
    let mut issued = None;
    for _ in 0..5 {
        let user_code = new_user_code();
        if let Ok(device_code) = state
            .store
            .insert_device_code(&user_code, AGENT_CLIENT_ID, ttl, interval)
            .await
        {
            issued = Some((device_code, user_code));
            break;
        }
    }
    let Some((device_code, user_code)) = issued else {
        tracing::error!("could not store a device code");
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the relay's state store failed",
        );
    };
    let shown = display_user_code(&user_code);
    let uri = format!("{}/device", state.issuer());
    tracing::info!(%peer, "device authorization started (agent login)");
    json(
        StatusCode::OK,
        &serde_json::json!({
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": uri,
            "verification_uri_complete": format!("{uri}?user_code={shown}"),
            "expires_in": ttl,
            "interval": interval,
        }),
    )
}

/// The token endpoint's device code grant (RFC 8628 §3.4–3.5): the
/// credential, or why not yet.
pub async fn exchange(state: &SharedState, form: &Params) -> Result<serde_json::Value, TokenError> {
    match form.get("client_id") {
        Some(AGENT_CLIENT_ID) => {}
        Some(_) => {
            return Err(TokenError::new(
                "invalid_client",
                format!("the device grant is for client_id {AGENT_CLIENT_ID:?}"),
            ))
        }
        None => return Err(TokenError::new("invalid_request", "client_id is required")),
    }
    let code = form
        .get("device_code")
        .ok_or_else(|| TokenError::new("invalid_request", "device_code is required"))?;
    let poll = state.store.poll_device(code).await.map_err(|e| {
        tracing::error!(error = %e, "device code lookup failed");
        TokenError::new("server_error", "the relay's state store failed")
    })?;
    let email = match poll {
        DevicePoll::Approved(email) => email,
        DevicePoll::Pending => {
            return Err(TokenError::new(
                "authorization_pending",
                "waiting for the code to be approved at /device",
            ))
        }
        DevicePoll::SlowDown => {
            return Err(TokenError::new(
                "slow_down",
                "polling faster than the interval; it is now 5 seconds longer",
            ))
        }
        DevicePoll::Denied => {
            return Err(TokenError::new(
                "access_denied",
                "the sign-in was denied at /device",
            ))
        }
        DevicePoll::Expired => {
            return Err(TokenError::new(
                "expired_token",
                "the code expired before it was approved; run agent login again",
            ))
        }
        DevicePoll::Unknown => {
            return Err(TokenError::new(
                "invalid_grant",
                "the device code is not known to this relay (or was already used)",
            ))
        }
    };
    let (record, secret) = state
        .store
        .create_token(TokenKind::Agent, &email, "agent login", None)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not create the agent credential");
            TokenError::new("server_error", "the relay's state store failed")
        })?;
    tracing::info!(email, token = record.id, "agent signed in (device grant)");
    Ok(serde_json::json!({
        "access_token": secret.expose(),
        "token_type": "Bearer",
        "token_id": record.id,
        "owner": email,
    }))
}

/// `GET /device[?user_code=…]`.
pub async fn page(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: &str,
) -> Response<RespBody> {
    let typed = Params::parse(query.as_bytes())
        .get("user_code")
        .unwrap_or("")
        .to_owned();
    let Some((_, s)) = session::current(state, headers).await else {
        // A fresh session to carry the CSRF token of the sign-in form.
        let id = match state.store.create_session(None, session::TTL_SECS).await {
            Ok(id) => id,
            Err(e) => return super::store_failed_page(e),
        };
        let csrf = match state.store.session(&id).await {
            Ok(Some(s)) => s.csrf,
            Ok(None) => {
                return super::store_failed_page(crate::RelayError::Config(
                    "session vanished".into(),
                ))
            }
            Err(e) => return super::store_failed_page(e),
        };
        return session::with_cookie(
            sign_in_page(state, StatusCode::OK, &csrf, &typed, "", None).await,
            &id,
        );
    };
    let Some(email) = s.email.clone() else {
        return sign_in_page(state, StatusCode::OK, &s.csrf, &typed, "", None).await;
    };
    if typed.is_empty() {
        return html(StatusCode::OK, pages::device_code(&email, "", None));
    }
    match pending(state, peer, &typed).await {
        Ok(code) => html(
            StatusCode::OK,
            pages::device_confirm(&s.csrf, &display_user_code(&code), &email),
        ),
        Err((status, message)) => html(status, pages::device_code(&email, &typed, Some(&message))),
    }
}

/// `POST /device/login`: sign in, then back to `/device` with the code.
pub async fn login(
    state: &SharedState,
    peer: IpAddr,
    headers: &HeaderMap,
    form: &Params,
) -> Response<RespBody> {
    let Some((old_id, s)) = checked_session(state, headers, form).await else {
        return csrf_refused();
    };
    let typed = form.get("user_code").unwrap_or("").to_owned();
    let email = form.get("email").unwrap_or("").trim().to_owned();
    let password = form.get("password").unwrap_or("").to_owned();
    match super::sign_in::sign_in(state, peer, &email, &password).await {
        Verdict::Right => {}
        Verdict::Wrong => {
            tracing::info!(email, "device sign-in refused: wrong email or password");
            return sign_in_page(
                state,
                StatusCode::UNAUTHORIZED,
                &s.csrf,
                &typed,
                &email,
                Some("Wrong email or password."),
            )
            .await;
        }
        Verdict::Refused(t) => {
            tracing::info!(email, %peer, refused = ?t, "device sign-in throttled");
            let mut resp = sign_in_page(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                &s.csrf,
                &typed,
                &email,
                Some(&t.message()),
            )
            .await;
            resp.headers_mut()
                .insert(header::RETRY_AFTER, t.retry_after_secs().into());
            return resp;
        }
        Verdict::Failed(e) => return super::store_failed_page(e),
    }
    // A new session id on sign-in (no session fixation).
    let _ = state.store.end_session(&old_id).await;
    let id = match state
        .store
        .create_session(Some(&email), session::TTL_SECS)
        .await
    {
        Ok(id) => id,
        Err(e) => return super::store_failed_page(e),
    };
    tracing::info!(email, "signed in (device page)");
    let next = format!(
        "/device?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user_code", &typed)
            .finish()
    );
    session::with_cookie(redirect(&next), &id)
}

/// `POST /device/approve`: the signed-in person approves or denies a code.
pub async fn approve(
    state: &SharedState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: &Params,
) -> Response<RespBody> {
    let Some((_, s)) = checked_session(state, headers, form).await else {
        return csrf_refused();
    };
    let typed = form.get("user_code").unwrap_or("").to_owned();
    let Some(email) = s.email.clone() else {
        return sign_in_page(state, StatusCode::UNAUTHORIZED, &s.csrf, &typed, "", None).await;
    };
    let code = match pending(state, peer, &typed).await {
        Ok(code) => code,
        Err((status, message)) => {
            return html(status, pages::device_code(&email, &typed, Some(&message)))
        }
    };
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("Invalid request", "the form has no decision"),
            )
        }
    };
    match state.store.decide_device(&code, &email, approve).await {
        Ok(true) if approve => {
            tracing::info!(email, "agent login approved");
            html(
                StatusCode::OK,
                pages::notice(
                    "Agent approved",
                    "The agent is signed in as you. You can close this page and go back to the terminal.",
                ),
            )
        }
        Ok(true) => {
            tracing::info!(email, "agent login denied");
            html(
                StatusCode::OK,
                pages::notice("Agent denied", "The agent was not signed in."),
            )
        }
        Ok(false) => html(
            StatusCode::BAD_REQUEST,
            pages::device_code(&email, &typed, Some(&no_such_code(&typed))),
        ),
        Err(e) => super::store_failed_page(e),
    }
}

/// The pending request a typed code names, or the status and message to
/// show. Wrong codes are rate-limited per address (guessing one is the
/// attack, RFC 8628 §5.1).
async fn pending(
    state: &SharedState,
    peer: SocketAddr,
    typed: &str,
) -> Result<String, (StatusCode, String)> {
    let Some(code) = normalize_user_code(typed) else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "{typed:?} is not a code: it is 8 letters, like BCDF-GHJK, as the agent printed it"
            ),
        ));
    };
    match state.store.pending_device(&code).await {
        Ok(Some(_)) => Ok(code),
        Ok(None) => {
            if let Err(wait) = state
                .oauth
                .device_guesses
                .check(peer.ip().to_canonical(), Instant::now())
            {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "too many wrong codes from this address; retry in {}s",
                        wait.as_secs().max(1)
                    ),
                ));
            }
            Err((StatusCode::BAD_REQUEST, no_such_code(typed)))
        }
        Err(e) => {
            tracing::error!(error = %e, "device code lookup failed");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "the relay's state store failed".into(),
            ))
        }
    }
}

/// The `/device` sign-in page: the password form when the relay has local
/// accounts (or no upstream provider), a link per upstream provider, which
/// comes back to `/device` with the typed code.
async fn sign_in_page(
    state: &SharedState,
    status: StatusCode,
    csrf: &str,
    typed: &str,
    email: &str,
    error: Option<&str>,
) -> Response<RespBody> {
    let upstream = &state.oauth.upstream;
    let passwords = !upstream.any()
        || match state.store.list_users().await {
            Ok(users) => !users.is_empty(),
            Err(e) => return super::store_failed_page(e),
        };
    html(
        status,
        pages::device_login(
            csrf,
            typed,
            email,
            error,
            &pages::SignInWays {
                passwords,
                providers: &upstream.device_links(csrf, typed),
            },
        ),
    )
}

fn no_such_code(typed: &str) -> String {
    format!(
        "No agent is waiting with the code {typed}. Check it against the one your terminal \
         shows; codes expire after a few minutes (run agent login again for a new one)."
    )
}

async fn checked_session(
    state: &SharedState,
    headers: &HeaderMap,
    form: &Params,
) -> Option<(String, crate::store::oauth::Session)> {
    let (id, s) = session::current(state, headers).await?;
    session::csrf_ok(&s, form.get("csrf")).then_some((id, s))
}

fn csrf_refused() -> Response<RespBody> {
    html(
        StatusCode::FORBIDDEN,
        pages::error(
            "Form expired",
            "the form's CSRF token is missing or does not belong to this browser's session; \
             open the agent's link again",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_unambiguous_letters_typed_loosely() {
        for _ in 0..50 {
            let code = new_user_code();
            assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
            let shown = display_user_code(&code);
            assert_eq!(shown.len(), 9);
            assert_eq!(normalize_user_code(&shown.to_lowercase()), Some(code));
        }
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDFGHJK")
        );
        for bad in ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1"] {
            assert_eq!(normalize_user_code(bad), None, "{bad}");
        }
    }
}
