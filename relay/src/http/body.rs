//! The body types of the relay's requests and responses.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// The error a body may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the relay sends.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// The body of a request as the relay forwards it.
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty response body.
pub fn empty() -> RespBody {
    full(Bytes::new())
}

/// A response body of these bytes.
pub fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
