//! The admin listener: plain HTTP on its own address (loopback by default),
//! for the machine's monitoring, never for the internet. It has no
//! authentication, so it must stay private.
//!
//! * `GET /metrics` — Prometheus metrics ([`crate::metrics`]).
//! * `GET /healthz` — 200 while the process serves at all.
//! * `GET /readyz` — 200 while the relay takes requests (its port is bound
//!   and its state store answers); 503 once it drains for shutdown.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::state::SharedState;

/// Serves the admin endpoints until `stop` (which comes after the relay's
/// drain, so that `/readyz` says 503 throughout it).
pub async fn serve(state: SharedState, listener: TcpListener, stop: CancellationToken) {
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
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req).await) }
            });
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

async fn answer(state: &SharedState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            // The certificate served now (ACME renews it in the background).
            if let Some(leaf) = state.certs.current().cert.first() {
                if let Ok(t) = crate::cert_resolver::not_after(leaf) {
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
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            if state.shutdown.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
            } else if let Err(e) = state.store.ping().await {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the state store fails: {e}\n"),
                )
            } else {
                text(StatusCode::OK, "ready\n".into())
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
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
