//! The authorization endpoint (`GET /oauth/authorize`) and the forms it
//! leads to: sign in (`POST /oauth/login`) and consent (`POST /oauth/consent`).
//!
//! Until the client and its redirect URI are known good, errors are pages
//! shown to the person: a redirect to an unchecked URI would make the relay
//! an open redirector. After that, errors go back to the client as
//! `error=…&state=…&iss=…` on its redirect URI (RFC 6749 §4.1.2.1, RFC 9207).

use std::net::IpAddr;

use http::{HeaderMap, Response, StatusCode};
use url::Url;

use crate::http::body::RespBody;
use crate::identity::{cimd, clients};
use crate::metrics::OAuthEvent;
use crate::state::SharedState;
use crate::store::now;
use crate::store::oauth::{AuthCode, OAuthClient, Session};
use crate::store::token;

use super::sign_in::Verdict;
use super::{
    client_lookup, html, html_to_client, pages, pkce, redirect, resource, scope, session, Params,
};

/// How long an authorization code may wait to be redeemed.
pub const CODE_TTL_SECS: i64 = 120;

/// A checked authorization request.
#[derive(Debug)]
pub struct AuthorizeRequest {
    pub client: OAuthClient,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub route: String,
    /// The route's canonical URL: the token's audience.
    pub resource: String,
    pub scope: String,
    /// The query string as received, carried through the forms.
    pub query: String,
}

/// Why a request cannot be authorized.
#[derive(Debug)]
pub enum Refusal {
    /// Shown to the person: the redirect URI is not (yet) trustworthy.
    Page { title: String, message: String },
    /// Shown to the person: too many documents fetched for their address.
    Limited {
        message: String,
        retry_after_secs: u64,
    },
    /// Sent back to the client's (checked) redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// Checks an authorization request (its query string).
/// A client given by URL has its metadata document fetched (or taken from
/// the cache) first.
/// `peer` pays for a fetch (see [`cimd`]).
pub async fn check(
    state: &SharedState,
    peer: IpAddr,
    query: &str,
) -> Result<AuthorizeRequest, Refusal> {
    let found = match Params::parse(query.as_bytes()).get("client_id") {
        Some(id) => client_lookup::find_client(state, peer, id).await,
        None => Ok(None),
    };
    check_query(&state.public_url, query, |_| found)
}

/// Checks an authorization request (its query string) made to the relay at
/// `public_url`, whose registered clients `find_client` looks up.
pub fn check_query(
    public_url: &str,
    query: &str,
    find_client: impl FnOnce(&str) -> Result<Option<OAuthClient>, cimd::LookupError>,
) -> Result<AuthorizeRequest, Refusal> {
    let params = Params::parse(query.as_bytes());
    let page = |title: &str, message: String| Refusal::Page {
        title: title.to_owned(),
        message,
    };
    let client_id = params
        .get("client_id")
        .ok_or_else(|| page("Invalid request", "the request has no client_id".into()))?;
    let client = match find_client(client_id) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(page(
                "Unknown application",
                format!("no application with client_id {client_id:?} is registered on this relay"),
            ))
        }
        Err(cimd::LookupError::Document(e)) => {
            return Err(page("Untrusted application", e.to_string()));
        }
        Err(cimd::LookupError::Limited(e)) => {
            return Err(Refusal::Limited {
                message: e.to_string(),
                retry_after_secs: e.retry_after_secs(),
            });
        }
        Err(cimd::LookupError::Store(e)) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(page(
                "Server error",
                "the relay's state store failed".into(),
            ));
        }
    };
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| page("Invalid request", "the request has no redirect_uri".into()))?;
    if !client
        .redirect_uris
        .iter()
        .any(|r| clients::redirect_matches(r, redirect_uri))
    {
        return Err(page(
            "Invalid redirect URI",
            format!(
                "{redirect_uri:?} is not a redirect URI registered for this application; \
                 the relay will not send you there"
            ),
        ));
    }
    if let Some(p) = params.repeated() {
        return Err(page(
            "Invalid request",
            format!("the parameter {p:?} is given more than once"),
        ));
    }
    let state_param = params.get("state").map(str::to_owned);
    let refuse = |error: &'static str, description: String| Refusal::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        state: state_param.clone(),
        error,
        description,
    };
    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(refuse(
                "unsupported_response_type",
                format!("response_type {other:?} is not supported; use \"code\""),
            ))
        }
        None => {
            return Err(refuse(
                "invalid_request",
                "response_type is required".into(),
            ))
        }
    }
    let Some(code_challenge) = params.get("code_challenge") else {
        return Err(refuse(
            "invalid_request",
            "PKCE is required: code_challenge is missing".into(),
        ));
    };
    if params.get("code_challenge_method") != Some("S256") {
        return Err(refuse(
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    if !pkce::valid_challenge(code_challenge) {
        return Err(refuse(
            "invalid_request",
            "code_challenge must be 43 characters of base64url (an S256 challenge)".into(),
        ));
    }
    let Some(resource_param) = params.get("resource") else {
        return Err(refuse(
            "invalid_target",
            "resource is required: the URL of the route to use (RFC 8707)".into(),
        ));
    };
    let Some((route, resource)) = resource::route_of(public_url, resource_param) else {
        return Err(refuse(
            "invalid_target",
            format!(
                "resource {resource_param:?} is not a route of this relay ({public_url}/mcp/<route>)"
            ),
        ));
    };
    let scope = match scope::normalize(params.get("scope")) {
        Ok(s) => s,
        Err(bad) => {
            return Err(refuse(
                "invalid_scope",
                format!(
                    "scope {bad:?} is not known here (supported: {})",
                    scope::SUPPORTED.join(", ")
                ),
            ));
        }
    };
    Ok(AuthorizeRequest {
        client,
        redirect_uri: redirect_uri.to_owned(),
        state: state_param,
        code_challenge: code_challenge.to_owned(),
        route,
        resource,
        scope,
        query: query.to_owned(),
    })
}

/// `GET /oauth/authorize`.
pub async fn authorize(
    state: &SharedState,
    peer: IpAddr,
    headers: &HeaderMap,
    query: &str,
) -> Response<RespBody> {
    let session = session::current(state, headers).await;
    let req = match check(state, peer, query).await {
        Ok(r) => r,
        Err(refusal @ Refusal::Redirect { .. })
            if session.as_ref().is_none_or(|(_, s)| s.email.is_none()) =>
        {
            return refused_before_sign_in(state, refusal)
        }
        Err(refusal) => return refused(state, refusal),
    };
    match session {
        Some((_, s)) => match &s.email {
            Some(email) => {
                match has_consent(state, email, &req.client.client_id, &req.route, &req.scope).await
                {
                    Ok(true) => issue_code(state, &req, email).await,
                    Ok(false) => consent_page(&s, &req, email),
                    Err(e) => super::store_failed_page(e),
                }
            }
            None => login_page(state, &s, &req, "", None, StatusCode::OK).await,
        },
        None => {
            // A fresh session to carry the CSRF token of the sign-in form.
            let id = match state.store.create_session(None, session::TTL_SECS).await {
                Ok(id) => id,
                Err(e) => return super::store_failed_page(e),
            };
            let s = match state.store.session(&id).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return super::store_failed_page(crate::RelayError::Config(
                        "session vanished".into(),
                    ))
                }
                Err(e) => return super::store_failed_page(e),
            };
            session::with_cookie(
                login_page(state, &s, &req, "", None, StatusCode::OK).await,
                &id,
            )
        }
    }
}

/// `POST /oauth/login`.
pub async fn login(
    state: &SharedState,
    peer: IpAddr,
    headers: &HeaderMap,
    form: &Params,
) -> Response<RespBody> {
    let Some((old_id, s)) = checked_session(state, headers, form).await else {
        return csrf_refused();
    };
    let req = match check(state, peer, form.get("request").unwrap_or("")).await {
        Ok(r) => r,
        Err(refusal) => return refused(state, refusal),
    };
    let email = form.get("email").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    match super::sign_in::sign_in(state, peer, email, password).await {
        Verdict::Right => {}
        Verdict::Wrong => {
            state.metrics.oauth(OAuthEvent::login_failed);
            tracing::info!(
                email,
                client_id = req.client.client_id,
                "sign-in refused: wrong email or password"
            );
            return login_page(
                state,
                &s,
                &req,
                email,
                Some("Wrong email or password."),
                StatusCode::UNAUTHORIZED,
            )
            .await;
        }
        Verdict::Refused(t) => {
            tracing::info!(email, %peer, refused = ?t, "sign-in throttled");
            let mut resp = login_page(
                state,
                &s,
                &req,
                email,
                Some(&t.message()),
                StatusCode::TOO_MANY_REQUESTS,
            )
            .await;
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, t.retry_after_secs().into());
            return resp;
        }
        Verdict::Failed(e) => return super::store_failed_page(e),
    }
    // A new session id on sign-in (no session fixation).
    let _ = state.store.end_session(&old_id).await;
    let id = match state
        .store
        .create_session(Some(email), session::TTL_SECS)
        .await
    {
        Ok(id) => id,
        Err(e) => return super::store_failed_page(e),
    };
    state.metrics.oauth(OAuthEvent::login_succeeded);
    tracing::info!(email, client_id = req.client.client_id, "signed in");
    session::with_cookie(redirect(&format!("/oauth/authorize?{}", req.query)), &id)
}

/// `POST /oauth/consent`.
pub async fn consent(
    state: &SharedState,
    peer: IpAddr,
    headers: &HeaderMap,
    form: &Params,
) -> Response<RespBody> {
    let Some((_, s)) = checked_session(state, headers, form).await else {
        return csrf_refused();
    };
    let req = match check(state, peer, form.get("request").unwrap_or("")).await {
        Ok(r) => r,
        Err(refusal) => return refused(state, refusal),
    };
    let Some(email) = s.email.clone() else {
        return login_page(state, &s, &req, "", None, StatusCode::UNAUTHORIZED).await;
    };
    match form.get("decision") {
        Some("approve") => {
            if let Err(e) = state
                .store
                .record_consent(&email, &req.client.client_id, &req.route, &req.scope)
                .await
            {
                return super::store_failed_page(e);
            }
            issue_code(state, &req, &email).await
        }
        Some("deny") => refused(
            state,
            Refusal::Redirect {
                redirect_uri: req.redirect_uri,
                state: req.state,
                error: "access_denied",
                description: "the user denied access".into(),
            },
        ),
        _ => html(
            StatusCode::BAD_REQUEST,
            pages::error("Invalid request", "the form has no decision"),
        ),
    }
}

/// The session of a form post, if its CSRF token is the session's.
async fn checked_session(
    state: &SharedState,
    headers: &HeaderMap,
    form: &Params,
) -> Option<(String, Session)> {
    let (id, s) = session::current(state, headers).await?;
    session::csrf_ok(&s, form.get("csrf")).then_some((id, s))
}

fn csrf_refused() -> Response<RespBody> {
    html(
        StatusCode::FORBIDDEN,
        pages::error(
            "Form expired",
            "the form's CSRF token is missing or does not belong to this browser's session; \
             go back to the application and start signing in again",
        ),
    )
}

async fn issue_code(
    state: &SharedState,
    req: &AuthorizeRequest,
    email: &str,
) -> Response<RespBody> {
    let code = AuthCode {
        family: token::random_hex(16),
        client_id: req.client.client_id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        code_challenge: req.code_challenge.clone(),
        resource: req.resource.clone(),
        email: email.to_owned(),
        scope: req.scope.clone(),
        expires_at: now() + CODE_TTL_SECS,
    };
    let secret = match state.store.insert_code(&code).await {
        Ok(s) => s,
        Err(e) => return super::store_failed_page(e),
    };
    state.metrics.oauth(OAuthEvent::code_issued);
    tracing::info!(
        email,
        client_id = req.client.client_id,
        route = req.route,
        "authorization code issued"
    );
    let mut pairs = vec![("code", secret.as_str())];
    if let Some(s) = &req.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", state.issuer()));
    redirect(&with_query(&req.redirect_uri, &pairs))
}

/// Whether `email` consented to `client_id` on `route` for `requested` (or
/// a wider scope).
async fn has_consent(
    state: &SharedState,
    email: &str,
    client_id: &str,
    route: &str,
    requested: &str,
) -> Result<bool, crate::RelayError> {
    let granted = state.store.consent_scope(email, client_id, route).await?;
    Ok(granted.is_some_and(|g| scope::covers(&g, requested)))
}

pub(super) fn refused(state: &SharedState, refusal: Refusal) -> Response<RespBody> {
    match refusal {
        Refusal::Page { title, message } => {
            html(StatusCode::BAD_REQUEST, pages::error(&title, &message))
        }
        Refusal::Limited {
            message,
            retry_after_secs,
        } => {
            let mut resp = html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::error("Too many requests", &message),
            );
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after_secs.into());
            resp
        }
        Refusal::Redirect {
            redirect_uri,
            state: client_state,
            error,
            description,
        } => {
            let mut pairs = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &client_state {
                pairs.push(("state", s));
            }
            pairs.push(("iss", state.issuer()));
            redirect(&with_query(&redirect_uri, &pairs))
        }
    }
}

/// A refusal of a request from a browser that has not signed in: errors
/// for a redirect URI on the web are shown, with a link back, rather than
/// redirected to (the relay is not an open redirector for anyone who
/// registers a client, RFC 9700 §4.11.2). Loopback and native-app redirect
/// URIs, which lead to the person's own machine, are redirected to.
fn refused_before_sign_in(state: &SharedState, refusal: Refusal) -> Response<RespBody> {
    let Refusal::Redirect {
        redirect_uri,
        state: client_state,
        error,
        description,
    } = refusal
    else {
        return refused(state, refusal);
    };
    let web_host = Url::parse(&redirect_uri).ok().and_then(|u| {
        let on_web = matches!(u.scheme(), "http" | "https") && !clients::is_loopback(&u);
        on_web.then(|| u.host_str().unwrap_or("").to_owned())
    });
    let Some(host) = web_host else {
        return refused(
            state,
            Refusal::Redirect {
                redirect_uri,
                state: client_state,
                error,
                description,
            },
        );
    };
    let mut pairs = vec![
        ("error", error),
        ("error_description", description.as_str()),
    ];
    if let Some(s) = &client_state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", state.issuer()));
    let back = with_query(&redirect_uri, &pairs);
    tracing::info!(
        error,
        host,
        "authorization request refused before sign-in: shown, not redirected"
    );
    html(
        StatusCode::BAD_REQUEST,
        pages::error_with_way_back(&format!("{error}: {description}"), &back, &host),
    )
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        // Registered URIs were parsed at registration; this cannot happen.
        Err(_) => uri.to_owned(),
    }
}

fn client_label(client: &OAuthClient) -> String {
    match &client.client_name {
        Some(n) => format!("{n} ({})", client.client_id),
        None => client.client_id.clone(),
    }
}

/// The sign-in page: the password form when the relay has local accounts
/// (or no upstream provider), a link per upstream provider.
async fn login_page(
    state: &SharedState,
    s: &Session,
    req: &AuthorizeRequest,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response<RespBody> {
    let upstream = &state.oauth.upstream;
    let passwords = !upstream.any()
        || match state.store.list_users().await {
            Ok(users) => !users.is_empty(),
            Err(e) => return super::store_failed_page(e),
        };
    html_to_client(
        status,
        pages::login(
            &s.csrf,
            &req.query,
            &client_label(&req.client),
            &req.route,
            email,
            error,
            &pages::SignInWays {
                passwords,
                providers: &upstream.links(&s.csrf, &req.query),
            },
        ),
        &req.redirect_uri,
    )
}

fn consent_page(s: &Session, req: &AuthorizeRequest, email: &str) -> Response<RespBody> {
    let host = Url::parse(&req.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(h) => format!("{}://{h}", u.scheme()),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    html_to_client(
        StatusCode::OK,
        pages::consent(
            &s.csrf,
            &req.query,
            &pages::ConsentView {
                email,
                client: &client_label(&req.client),
                redirect_host: &host,
                route: &req.route,
                resource: &req.resource,
                scope: &req.scope,
            },
        ),
        &req.redirect_uri,
    )
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn answers_are_added_to_the_redirect_uri_query() {
        assert_eq!(
            with_query(
                "http://127.0.0.1:5/cb",
                &[("code", "c"), ("iss", "https://r:1")]
            ),
            "http://127.0.0.1:5/cb?code=c&iss=https%3A%2F%2Fr%3A1"
        );
        assert_eq!(
            with_query(
                "cursor://anysphere.cursor-mcp/oauth/callback?x=1",
                &[("state", "a b")]
            ),
            "cursor://anysphere.cursor-mcp/oauth/callback?x=1&state=a+b"
        );
    }
}
