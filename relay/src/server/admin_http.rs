//! The admin listener: plain HTTP on its own address (loopback by default),
//! for the machine's monitoring, never for the internet. It has no
//! authentication, so it must stay private.
//!
//! * `GET /metrics` — Prometheus metrics ([`crate::metrics`]).
//! * `GET /healthz` — 200 while the process serves at all.
//! * `GET /readyz` — 200 while the relay takes requests (its port is bound
//!   and its state store answers: a PostgreSQL database within 0.5 s); 503
//!   with the reason while the store does not answer, and once it drains
//!   for shutdown.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::SharedState;
use crate::store::{StoreError, REMOTE_READ_BOUND};

/// Serves the admin endpoints until `stop` (which comes after the relay's
/// drain, so that `/readyz` says 503 throughout it).
pub async fn serve(state: SharedState, listener: TcpListener, stop: CancellationToken) {
    let router = router(state);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                res = conn => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The endpoints. A method other than GET or HEAD is refused on any path.
fn router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { text(StatusCode::OK, "ok\n".into()) }),
        )
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(only_get)
        .with_state(state)
}

async fn metrics(State(state): State<SharedState>) -> Response<Full<Bytes>> {
    // The certificate served now (ACME renews it in the background).
    if let Some(leaf) = state.certs.current().cert.first() {
        if let Ok(t) = crate::tls::resolver::not_after(leaf) {
            state.metrics.set_certificate_expiry(t);
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(state.metrics.encode())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    resp
}

async fn readyz(State(state): State<SharedState>) -> Response<Full<Bytes>> {
    if state.shutdown.is_cancelled() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    } else if let Err(e) = ping(&state).await {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state store fails: {e}\n"),
        )
    } else {
        text(StatusCode::OK, "ready\n".into())
    }
}

/// The store's answer to a ping; a database on the network (PostgreSQL)
/// that does not answer within [`REMOTE_READ_BOUND`] (cut off, or stopped
/// without closing its connections) fails it, as the request path would.
async fn ping(state: &SharedState) -> Result<(), StoreError> {
    if !state.store.is_remote() {
        return state.store.ping().await;
    }
    tokio::time::timeout(REMOTE_READ_BOUND, state.store.ping())
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Backend(format!(
                "the database did not answer within {} ms",
                REMOTE_READ_BOUND.as_millis()
            )))
        })
}

async fn not_found(method: Method) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return only_get().await;
    }
    text(
        StatusCode::NOT_FOUND,
        "not found: /metrics, /healthz, /readyz\n".into(),
    )
}

async fn only_get() -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
