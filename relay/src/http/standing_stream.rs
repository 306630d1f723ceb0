//! Standing streams end when the relay shuts down.
//!
//! A Streamable HTTP `GET` stream (every SDK opens one per session) expects
//! no answer: it only carries what the server sends on its own initiative,
//! and a client reopens it when it ends. Draining it on shutdown would hold
//! a restart for the whole drain timeout, so it is ended at once (cleanly:
//! the client sees the end of the body, not an error), while requests that
//! expect an answer, a `POST`'s event stream included, are drained.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::http::body::{BoxError, RespBody};

/// `body`, ended (at a frame boundary) once `shutdown` is cancelled.
pub fn end_on_shutdown(body: RespBody, shutdown: &CancellationToken) -> RespBody {
    EndOnShutdown {
        inner: body,
        shutdown: Box::pin(shutdown.clone().cancelled_owned()),
        ended: false,
    }
    .boxed_unsync()
}

struct EndOnShutdown {
    inner: RespBody,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl Body for EndOnShutdown {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.ended = true;
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn a_standing_stream_ends_at_shutdown() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let frames =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let inner = StreamBody::new(frames).boxed_unsync();
        let shutdown = CancellationToken::new();
        let mut body = end_on_shutdown(inner, &shutdown);
        tx.send(Ok(Frame::data(Bytes::from_static(b"event\n\n"))))
            .await
            .expect("send");
        let first = body.frame().await.expect("a frame").expect("ok");
        assert_eq!(first.into_data().expect("data"), "event\n\n");
        shutdown.cancel();
        // Ends although the inner stream is still open.
        assert!(body.frame().await.is_none());
        drop(tx);
    }
}
