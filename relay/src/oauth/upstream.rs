//! The endpoints of sign-in through an upstream identity provider
//! ([`crate::identity::upstream`]): `GET /oauth/upstream/<provider>` sends
//! the browser to the provider, `GET /oauth/callback/<provider>` takes it
//! back.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderMap, Response, StatusCode};
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};

use crate::http::body::RespBody;
use crate::identity::upstream::{Back, NotStarted, Pending, ProviderKind};
use crate::metrics::OAuthEvent;
use crate::state::SharedState;

use super::{html, pages, redirect, session, Params};

fn page(status: StatusCode, title: &str, message: &str) -> Response<RespBody> {
    html(status, pages::error(title, message))
}

/// `GET /oauth/upstream/<provider>?csrf=…&request=…` (or `&device=CODE`,
/// from `/device`): off to the provider.
pub async fn start(
    state: &SharedState,
    peer: std::net::IpAddr,
    provider: &str,
    headers: &HeaderMap,
    query: &str,
) -> Response<RespBody> {
    let upstream = &state.oauth.upstream;
    let Some(kind) = ProviderKind::from_slug(provider) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown provider",
            "no such sign-in provider",
        );
    };
    let params = Params::parse(query.as_bytes());
    let Some((session_id, s)) = session::current(state, headers).await else {
        return csrf_refused();
    };
    if !session::csrf_ok(&s, params.get("csrf")) {
        return csrf_refused();
    }
    if let Err(e) = upstream.admit(peer, Instant::now()) {
        return not_started(peer, e);
    }
    let back = match params.get("device") {
        // The code is checked on the way back, at /device.
        Some(user_code) => Back::Device(user_code.to_owned()),
        None => {
            let request = params.get("request").unwrap_or("").to_owned();
            // The request must be one the relay would answer before the
            // person leaves for the provider.
            if let Err(refusal) = super::authorize::check(state, peer, &request).await {
                return super::authorize::refused(state, refusal);
            }
            Back::Authorize(request)
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let oauth_state = crate::store::token::random_hex(32);
    let nonce = crate::store::token::random_hex(32);
    let url = match kind {
        ProviderKind::Oidc => upstream
            .oidc
            .as_ref()
            .map(|o| o.authorize_url(&oauth_state, &nonce, challenge)),
        ProviderKind::GitHub => upstream
            .github
            .as_ref()
            .map(|g| g.authorize_url(&oauth_state, challenge)),
    };
    let Some(url) = url else {
        return not_configured();
    };
    let pending = Pending {
        provider: kind,
        session_hash: crate::store::token::hash(&session_id),
        address: crate::limits::ip_key::of(peer),
        verifier: verifier.secret().clone(),
        nonce,
        back,
        started_ms: ::store::now_ms(),
    };
    if let Err(e) = upstream
        .remember(&*state.store, &oauth_state, &pending)
        .await
    {
        return not_started(peer, e);
    }
    redirect(url.as_str())
}

/// `GET /oauth/callback/<provider>?code=…&state=…`: back from the provider.
pub async fn callback(
    state: &SharedState,
    provider: &str,
    headers: &HeaderMap,
    query: &str,
) -> Response<RespBody> {
    let upstream = &state.oauth.upstream;
    let Some(kind) = ProviderKind::from_slug(provider) else {
        return page(
            StatusCode::NOT_FOUND,
            "Unknown provider",
            "no such sign-in provider",
        );
    };
    let params = Params::parse(query.as_bytes());
    let taken = match params.get("state") {
        Some(s) => match upstream.take(&*state.store, s).await {
            Ok(p) => p,
            Err(e) => return super::store_failed_page(e),
        },
        None => None,
    };
    let Some(p) = taken else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "this answer of the sign-in provider belongs to no sign-in under way here \
             (too old, used already, or not started by this relay); go back to the \
             application and start again",
        );
    };
    // The answer must come back to the browser that left.
    let cookie = session::cookie_id(headers);
    let same_browser = cookie
        .as_deref()
        .is_some_and(|id| super::ct_eq(&crate::store::token::hash(id), &p.session_hash));
    let (Some(old_id), true) = (cookie, p.provider == kind && same_browser) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "this sign-in was started in another browser session",
        );
    };
    if let Some(error) = params.get("error") {
        state.metrics.oauth(OAuthEvent::login_failed);
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            &format!(
                "the sign-in provider answered {error}{}",
                params
                    .get("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        );
    }
    let Some(code) = params.get("code") else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "the sign-in provider's answer has no code",
        );
    };
    let verifier = PkceCodeVerifier::new(p.verifier);
    let identified = match (kind, &upstream.oidc, &upstream.github) {
        (ProviderKind::Oidc, Some(o), _) => {
            o.identify(&upstream.http, code, verifier, &p.nonce).await
        }
        (ProviderKind::GitHub, _, Some(g)) => g.identify(&upstream.http, code, verifier).await,
        _ => return not_configured(),
    };
    let who = match identified {
        Ok(who) => who,
        Err(e) => {
            state.metrics.oauth(OAuthEvent::login_failed);
            tracing::info!(provider = kind.slug(), error = %e, "upstream sign-in refused");
            return page(StatusCode::UNAUTHORIZED, "Sign-in refused", &e.to_string());
        }
    };
    if let Err(e) = state.store.set_groups(&who.email, &who.groups).await {
        return super::store_failed_page(e);
    }
    // A new session id on sign-in (no session fixation).
    let _ = state.store.end_session(&old_id).await;
    let id = match state
        .store
        .create_session(Some(&who.email), session::TTL_SECS)
        .await
    {
        Ok(id) => id,
        Err(e) => return super::store_failed_page(e),
    };
    state.metrics.oauth(OAuthEvent::login_succeeded);
    tracing::info!(
        email = who.email,
        groups = ?who.groups,
        provider = kind.slug(),
        "signed in at the upstream provider"
    );
    session::with_cookie(redirect(&p.back.url()), &id)
}

fn not_started(peer: IpAddr, e: NotStarted) -> Response<RespBody> {
    match e {
        NotStarted::Address {
            message,
            retry_after,
        } => {
            tracing::info!(%peer, message, "upstream sign-in not started");
            let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            let mut resp = page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                &format!("{message} (in {secs} s)"),
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
            resp
        }
        NotStarted::Store(e) => super::store_failed_page(e),
        NotStarted::Full => {
            tracing::warn!("the table of pending upstream sign-ins is full");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "too many sign-ins are under way; try again in a few minutes",
            )
        }
    }
}

fn not_configured() -> Response<RespBody> {
    page(
        StatusCode::NOT_FOUND,
        "Unknown provider",
        "this relay has no such sign-in provider",
    )
}

fn csrf_refused() -> Response<RespBody> {
    page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "the link's CSRF token is missing or does not belong to this browser's session; \
         go back to the application and start signing in again",
    )
}
