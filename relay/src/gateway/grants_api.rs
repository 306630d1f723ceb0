//! The grants API that `agent share` calls, authenticated with the route
//! owner's agent credential (`agent login`, or `relay token create --owner`):
//!
//! * `POST /api/routes/<route>/grants` — share a route: `{"with":
//!   "bob@example.com" | "@example.com", "tools": ["a", "b"] | null,
//!   "resources": ["memo://*"], "prompts": ["name"], "read_only": bool,
//!   "expires_in": seconds | null}`; 201 with the grant. `tools` absent or
//!   null: any tool; `resources` and `prompts` (patterns, `*` matching any
//!   run of characters) absent: none.
//!   A route nobody has claimed yet becomes the caller's (as serving it
//!   would); one that belongs to someone else is 403.
//! * `GET /api/grants[?route=<route>]` — the caller's grants (not revoked;
//!   expired ones too, marked).
//! * `DELETE /api/grants/<id>` — revoke one of them; the grantee's next
//!   request is decided without it.
//!
//! Errors are `{"error": code, "message": text}` like the gateway's.

use std::sync::LazyLock;

use axum::extract::Request;
use axum::{Extension, Router};
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::http::body::{full, RespBody};
use crate::http::response::error;
use crate::http::router::{delete_only, get_only, post_only};
use crate::state::SharedState;
use crate::store::grants::{GrantConvert, GrantRecord, NewGrant};
use crate::store::token::TokenKind;
use crate::store::{now, RouteClaim};

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// Whether the grants API serves `path`.
pub fn serves(path: &str) -> bool {
    path.starts_with("/api/")
}

/// What `POST /api/routes/<route>/grants` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    with: String,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    prompts: Vec<String>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Serves one request to the grants API: the caller's credential first,
/// whatever the path, then the endpoint ([`ROUTER`]).
pub async fn handle(state: &SharedState, mut req: Request<Incoming>) -> Response<RespBody> {
    let owner = match authenticate(state, req.headers()).await {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    req.extensions_mut().insert(state.clone());
    req.extensions_mut().insert(Owner(owner));
    crate::http::router::serve(&ROUTER, req).await
}

/// The endpoints (built once: the state and the caller come with each
/// request). A trailing `/` is the same path.
static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    Router::new()
        .route(
            "/api/routes/{route}/grants",
            post_only(post_grant, wrong_method),
        )
        .route(
            "/api/routes/{route}/grants/",
            post_only(post_grant, wrong_method),
        )
        .route("/api/grants", get_only(list_grants, wrong_method))
        .route("/api/grants/", get_only(list_grants, wrong_method))
        .route("/api/grants/{id}", delete_only(delete_grant, wrong_method))
        .route("/api/grants/{id}/", delete_only(delete_grant, wrong_method))
        .fallback(|req: Request| async move {
            let path = req.uri().path();
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such path on this relay: {path}"),
            )
        })
});

/// The route owner who asks (see [`authenticate`]).
#[derive(Clone)]
struct Owner(String);

fn wrong_method(method: &Method, path: &str) -> Response<RespBody> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {path}"),
    )
}

/// The path's `index`th segment after `/api/` (the router matched the path).
fn segment(req: &Request, index: usize) -> String {
    req.uri()
        .path()
        .trim_start_matches("/api/")
        .trim_end_matches('/')
        .split('/')
        .nth(index)
        .unwrap_or_default()
        .to_owned()
}

async fn post_grant(
    Extension(state): Extension<SharedState>,
    Extension(Owner(owner)): Extension<Owner>,
    req: Request,
) -> Response<RespBody> {
    let route = segment(&req, 1);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("could not read the request body (at most {MAX_BODY} bytes): {e}"),
            )
        }
    };
    create(&state, &owner, &route, &body).await
}

async fn list_grants(
    Extension(state): Extension<SharedState>,
    Extension(Owner(owner)): Extension<Owner>,
    req: Request,
) -> Response<RespBody> {
    let route = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "route")
            .map(|(_, v)| v.into_owned())
    });
    match state.store.owner_grants(&owner, route.as_deref()).await {
        Ok(grants) => {
            let list: Vec<_> = grants.iter().map(|g| view(&state, g)).collect();
            json(StatusCode::OK, &serde_json::json!({ "grants": list }))
        }
        Err(e) => store_failed(e),
    }
}

async fn delete_grant(
    Extension(state): Extension<SharedState>,
    Extension(Owner(owner)): Extension<Owner>,
    req: Request,
) -> Response<RespBody> {
    revoke(&state, &owner, &segment(&req, 1)).await
}

/// The owner the agent credential belongs to. The error is the 401 to send.
async fn authenticate(
    state: &SharedState,
    headers: &http::HeaderMap,
) -> Result<String, Box<Response<RespBody>>> {
    let refuse = |text: &str| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            &format!(
                "{text}; sign in with `agent login --relay {}`",
                state.public_url
            ),
        ))
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| {
            refuse("this API needs the route owner's agent credential as a bearer token")
        })?;
    let record = state
        .store
        .verify(presented)
        .await
        .map_err(|rejection| refuse(&rejection.to_string()))?;
    if record.kind != TokenKind::Agent {
        return Err(refuse(
            "a client token cannot manage grants; use an agent credential",
        ));
    }
    Ok(record.owner)
}

async fn create(state: &SharedState, owner: &str, route: &str, body: &[u8]) -> Response<RespBody> {
    if let Err(e) = protocol::validate_route_name(route) {
        return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
    }
    let request: GrantRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the body is not a grant: {e}"),
            )
        }
    };
    let grantee = match policy::Grantee::parse(&request.with) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    let expires_at = match request.expires_in {
        None => None,
        Some(secs) => match i64::try_from(secs).ok().and_then(|s| now().checked_add(s)) {
            Some(t) => Some(t),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "expires_in is too large",
                )
            }
        },
    };
    match state
        .store
        .claim_route_capped(route, owner, state.config.max_routes_per_owner)
        .await
    {
        Ok(RouteClaim::Granted) => {}
        Ok(RouteClaim::TooMany { max }) => {
            return error(
                StatusCode::FORBIDDEN,
                "too_many_routes",
                &format!("route '{route}' is new, but you already hold {max} routes on this relay, the most one owner may claim"),
            );
        }
        Ok(RouteClaim::Taken { .. }) => {
            tracing::warn!(
                route,
                owner,
                "grant refused: the route belongs to another owner"
            );
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("route '{route}' belongs to another owner on this relay; only its owner may share it"),
            );
        }
        Err(e) => return store_failed(e),
    }
    let grantee = grantee.to_string();
    let new = NewGrant {
        route,
        grantee: &grantee,
        tools: request.tools.as_deref(),
        resources: &request.resources,
        prompts: &request.prompts,
        read_only: request.read_only,
        created_by: owner,
        expires_at,
    };
    let record = match state.store.create_grant(&new).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    // Refuse (and undo) what the engine could not use, e.g. an empty tool name.
    if let Err(e) = record.to_policy() {
        let _ = state.store.revoke_grant(&record.id).await;
        return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string());
    }
    state.policies.forget_grants(route);
    tracing::info!(
        route,
        owner,
        grant = record.id,
        with = record.grantee,
        read_only = record.read_only,
        expires_at = record.expires_at,
        "route shared"
    );
    json(StatusCode::CREATED, &view(state, &record))
}

async fn revoke(state: &SharedState, owner: &str, id: &str) -> Response<RespBody> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no grant {id:?} on a route of yours (see `agent share --list`)"),
        )
    };
    let grant = match state.store.grant(id).await {
        Ok(Some(g)) => g,
        Ok(None) => return not_found(),
        Err(e) => return store_failed(e),
    };
    match state.store.route_owner(&grant.route).await {
        Ok(Some(o)) if o == owner => {}
        Ok(_) => {
            tracing::warn!(
                grant = id,
                owner,
                "revocation refused: not the route's owner"
            );
            return not_found();
        }
        Err(e) => return store_failed(e),
    }
    match state.store.revoke_grant(id).await {
        Ok(true) => {}
        Ok(false) => return not_found(),
        Err(e) => return store_failed(e),
    }
    state.policies.forget_grants(&grant.route);
    tracing::info!(route = grant.route, owner, grant = id, "grant revoked");
    json(
        StatusCode::OK,
        &serde_json::json!({ "revoked": id, "route": grant.route }),
    )
}

/// A grant as the API shows it.
fn view(state: &SharedState, g: &GrantRecord) -> serde_json::Value {
    serde_json::json!({
        "id": g.id,
        "route": g.route,
        "route_url": state.route_url(&g.route),
        "with": g.grantee,
        "tools": g.tools,
        "resources": g.resources,
        "prompts": g.prompts,
        "read_only": g.read_only,
        "created_at": g.created_at,
        "expires_at": g.expires_at,
        "expired": g.expires_at.is_some_and(|t| t <= now()),
    })
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn store_failed(e: impl std::fmt::Display) -> Response<RespBody> {
    tracing::error!(error = %e, "grants: the state store failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the relay's state store failed",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_fit_together() {
        // axum refuses overlapping routes when the router is built.
        LazyLock::force(&ROUTER);
    }

    #[test]
    fn segments_are_taken_raw() {
        let req = |path: &str| {
            Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        assert_eq!(segment(&req("/api/routes/db/grants/"), 1), "db");
        assert_eq!(segment(&req("/api/grants/a%2Fb"), 1), "a%2Fb");
        assert_eq!(segment(&req("/api/grants"), 1), "");
    }
}
