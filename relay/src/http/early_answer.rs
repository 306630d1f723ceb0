//! Answers given before the request body was needed (401, 404, 429, 503)
//! arrive intact.
//!
//! Answering while the client is still sending its body, then dropping the
//! body, makes HTTP/2 reset the stream (RST_STREAM): curl then reports
//! "Stream error in the HTTP/2 framing layer" instead of the relay's status
//! and message, which is what a newcomer needs to read. So a small body is
//! read (and thrown away) first, within a short time; a body larger than
//! [`DRAIN_MAX`] or slower than [`DRAIN_WAIT`] is not waited for (and an
//! HTTP/1.1 connection is then closed after the answer, as its next request
//! would start in the middle of this one's body).

use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http::body::RespBody;

/// The most body bytes read before an early answer.
pub const DRAIN_MAX: usize = 64 * 1024;
/// The longest wait for the body before an early answer.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// `response`, once `req`'s body has been read through (bounded).
pub async fn after_body(
    req: Request<Incoming>,
    mut response: Response<RespBody>,
) -> Response<RespBody> {
    let version = req.version();
    let mut body = req.into_body();
    let drained = body.is_end_stream()
        || tokio::time::timeout(DRAIN_WAIT, async {
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return false };
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                    if read > DRAIN_MAX {
                        return false;
                    }
                }
            }
            true
        })
        .await
        .unwrap_or(false);
    if !drained && version < http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
