//! The relay's endpoints beside the MCP hot path (the OAuth server, the
//! grants API, the admin listener) are axum [`Router`]s, called from the
//! relay's own hyper connections by [`serve`]. The method routers here answer
//! a method an endpoint does not take with the module's own error body and
//! `Allow`.

use axum::body::Body;
use axum::extract::Request;
use axum::handler::Handler;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::body::{BoxError, RespBody};

/// Hands `req` to `router`; its answer, with the relay's response body.
pub async fn serve<B>(router: &Router, req: http::Request<B>) -> Response<RespBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let resp = match router.clone().oneshot(req.map(Body::new)).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    resp.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// A module's answer to a method its endpoint at a path does not take.
pub type Refusal = fn(&Method, &str) -> Response<RespBody>;

/// `handler` for GET alone; any other method gets `refuse`'s answer with
/// `Allow: GET`. HEAD too, which axum would answer with the GET handler.
pub fn get_only<H, T>(handler: H, refuse: Refusal) -> MethodRouter
where
    H: Handler<T, ()>,
    T: 'static,
{
    let refusal = refusal("GET", refuse);
    get(handler).head(refusal).fallback(refusal)
}

/// `handler` for POST alone; any other method gets `refuse`'s answer with
/// `Allow: POST`.
pub fn post_only<H, T>(handler: H, refuse: Refusal) -> MethodRouter
where
    H: Handler<T, ()>,
    T: 'static,
{
    post(handler).fallback(refusal("POST", refuse))
}

/// `handler` for DELETE alone; any other method gets `refuse`'s answer with
/// `Allow: DELETE`.
pub fn delete_only<H, T>(handler: H, refuse: Refusal) -> MethodRouter
where
    H: Handler<T, ()>,
    T: 'static,
{
    delete(handler).fallback(refusal("DELETE", refuse))
}

/// The handler that refuses a request with `Allow: allow`.
fn refusal(
    allow: &'static str,
    refuse: Refusal,
) -> impl Fn(Request) -> std::future::Ready<Response<RespBody>> + Copy + Send + Sync + 'static {
    move |req: Request| {
        let mut resp = refuse(req.method(), req.uri().path());
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        std::future::ready(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::full;
    use http::StatusCode;

    fn refuse(method: &Method, path: &str) -> Response<RespBody> {
        let mut resp = Response::new(full(format!("{method} on {path}")));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp
    }

    async fn call(router: &Router, method: &str, path: &str) -> (StatusCode, String, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = serve(router, req).await;
        let allow = resp
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, allow, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_wrong_method_gets_the_modules_answer_and_allow() {
        let router = Router::new()
            .route("/g", get_only(|| async { "got" }, refuse))
            .route("/p", post_only(|| async { "posted" }, refuse))
            .route("/d", delete_only(|| async { "deleted" }, refuse));
        assert_eq!(
            call(&router, "GET", "/g").await,
            (StatusCode::OK, String::new(), "got".into())
        );
        for (method, path, allow) in [
            ("POST", "/g", "GET"),
            ("HEAD", "/g", "GET"),
            ("GET", "/p", "POST"),
            ("HEAD", "/p", "POST"),
            ("PUT", "/d", "DELETE"),
        ] {
            let (status, got_allow, body) = call(&router, method, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(got_allow, allow, "{method} {path}");
            if method != "HEAD" {
                assert_eq!(body, format!("{method} on {path}"));
            }
        }
        assert_eq!(
            call(&router, "POST", "/p").await,
            (StatusCode::OK, String::new(), "posted".into())
        );
        assert_eq!(
            call(&router, "DELETE", "/d").await,
            (StatusCode::OK, String::new(), "deleted".into())
        );
    }
}
