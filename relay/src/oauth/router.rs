//! The authorization server's endpoints as an axum [`Router`]: each path,
//! the method it takes and the function that serves it. The relay's state
//! and the client's address come with each request ([`super::handle`]).

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::extract::{ConnectInfo, Request};
use axum::routing::any;
use axum::{Extension, Router};
use http::HeaderMap;
use http::{Method, Response, StatusCode};

use crate::http::body::RespBody;
use crate::http::router::{get_only, post_only};
use crate::state::SharedState;

use super::{
    authorize, device, json, metadata, oauth_error, register, revoke, token_endpoint, upstream,
    Body, Form,
};

/// The endpoints (built once: the state comes with each request).
pub(super) static ROUTER: LazyLock<Router> = LazyLock::new(router);

/// Where a route's protected resource metadata lives.
const ROUTE_RESOURCE: &str = "/.well-known/oauth-protected-resource/mcp/";
/// Where a sign-in through an upstream provider starts.
const UPSTREAM_START: &str = "/oauth/upstream/";
/// Where an upstream provider sends the browser back.
const UPSTREAM_CALLBACK: &str = "/oauth/callback/";

fn router() -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get_only(authorization_server, wrong_method),
        )
        .route(
            "/.well-known/openid-configuration",
            get_only(authorization_server, wrong_method),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get_only(protected_resource, wrong_method),
        )
        // Under a prefix, only GET is served; anything else is no such path.
        .route(ROUTE_RESOURCE, any(route_resource))
        .route(&format!("{ROUTE_RESOURCE}{{*route}}"), any(route_resource))
        .route("/oauth/register", post_only(register, wrong_method))
        .route("/oauth/authorize", get_only(authorize, wrong_method))
        .route("/oauth/login", post_only(login, wrong_method))
        .route("/oauth/consent", post_only(consent, wrong_method))
        .route(UPSTREAM_START, any(upstream_start))
        .route(
            &format!("{UPSTREAM_START}{{*provider}}"),
            any(upstream_start),
        )
        .route(UPSTREAM_CALLBACK, any(upstream_callback))
        .route(
            &format!("{UPSTREAM_CALLBACK}{{*provider}}"),
            any(upstream_callback),
        )
        .route("/oauth/token", post_only(token, wrong_method))
        .route("/oauth/revoke", post_only(revoke, wrong_method))
        .route(
            "/oauth/device_authorization",
            post_only(device_authorization, wrong_method),
        )
        .route("/device", get_only(device_page, wrong_method))
        .route("/device/login", post_only(device_login, wrong_method))
        .route("/device/approve", post_only(device_approve, wrong_method))
        .fallback(|req: Request| async move { no_such_path(req.uri().path()) })
}

fn wrong_method(method: &Method, path: &str) -> Response<RespBody> {
    oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        &format!("{method} is not allowed on {path}"),
    )
}

fn no_such_path(path: &str) -> Response<RespBody> {
    oauth_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no such path on this relay: {path}"),
    )
}

/// What follows `prefix` in the request's path, if it is a GET.
fn get_under<'r>(req: &'r Request, prefix: &str) -> Option<&'r str> {
    (req.method() == Method::GET)
        .then(|| req.uri().path().strip_prefix(prefix))
        .flatten()
}

async fn authorization_server(Extension(state): Extension<SharedState>) -> Response<RespBody> {
    json(StatusCode::OK, &metadata::authorization_server(&state))
}

async fn protected_resource(Extension(state): Extension<SharedState>) -> Response<RespBody> {
    json(StatusCode::OK, &metadata::protected_resource(&state, None))
}

async fn route_resource(
    Extension(state): Extension<SharedState>,
    req: Request,
) -> Response<RespBody> {
    let Some(route) = get_under(&req, ROUTE_RESOURCE) else {
        return no_such_path(req.uri().path());
    };
    let route = route.strip_suffix('/').unwrap_or(route);
    if protocol::validate_route_name(route).is_err() {
        oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{route:?} is not a route name"),
        )
    } else {
        json(
            StatusCode::OK,
            &metadata::protected_resource(&state, Some(route)),
        )
    }
}

async fn register(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(body): Body,
) -> Response<RespBody> {
    register::register(&state, peer, &body).await
}

async fn authorize(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<RespBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    authorize::authorize(&state, peer.ip(), req.headers(), &query).await
}

async fn login(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form,
) -> Response<RespBody> {
    authorize::login(&state, peer.ip(), &headers, &form).await
}

async fn consent(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form,
) -> Response<RespBody> {
    authorize::consent(&state, peer.ip(), &headers, &form).await
}

async fn upstream_start(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<RespBody> {
    let Some(provider) = get_under(&req, UPSTREAM_START) else {
        return no_such_path(req.uri().path());
    };
    let provider = provider.to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    upstream::start(&state, peer.ip(), &provider, req.headers(), &query).await
}

async fn upstream_callback(
    Extension(state): Extension<SharedState>,
    req: Request,
) -> Response<RespBody> {
    let Some(provider) = get_under(&req, UPSTREAM_CALLBACK) else {
        return no_such_path(req.uri().path());
    };
    let provider = provider.to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    upstream::callback(&state, &provider, req.headers(), &query).await
}

async fn token(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form,
) -> Response<RespBody> {
    token_endpoint::token(&state, peer.ip(), &form).await
}

async fn revoke(Extension(state): Extension<SharedState>, Form(form): Form) -> Response<RespBody> {
    revoke::revoke(&state, &form).await
}

async fn device_authorization(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form,
) -> Response<RespBody> {
    device::authorization(&state, peer, &form).await
}

async fn device_page(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<RespBody> {
    let query = req.uri().query().unwrap_or("").to_owned();
    device::page(&state, peer, req.headers(), &query).await
}

async fn device_login(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form,
) -> Response<RespBody> {
    device::login(&state, peer.ip(), &headers, &form).await
}

async fn device_approve(
    Extension(state): Extension<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form,
) -> Response<RespBody> {
    device::approve(&state, peer, &headers, &form).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routes_fit_together() {
        // axum refuses overlapping routes when the router is built.
        let _ = router();
    }
}
