//! The relay's own JSON answers.

use ::http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, RespBody};

/// A JSON error body: `{"error": code, "message": text}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<RespBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 of the relay is temporary: say when to come back.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// A JSON body as it is (a JSON-RPC answer, say), with `status`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain text body.
pub fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_and_a_503_says_when_to_come_back() {
        let resp = error(StatusCode::FORBIDDEN, "denied", "no");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let resp = error(StatusCode::SERVICE_UNAVAILABLE, "busy", "later");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
    }
}
