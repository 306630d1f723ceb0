//! Keep-alive comments on server-sent event streams.
//!
//! Proxies and load balancers close connections that stay silent (often after
//! 30–60 s), and a long tool call can be silent for minutes. When an event
//! stream has sent nothing for the interval, the relay sends the SSE comment
//! `: keep-alive` followed by a blank line, which every SSE parser ignores.
//!
//! A comment may only go between events: injected inside a partially
//! forwarded event, its blank line would dispatch half an event. So the body
//! remembers the last bytes it passed on and sends a comment only when they
//! end with a blank line (or nothing was sent yet). Nothing is buffered: each
//! chunk passes through as soon as it arrives.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::body::{BoxError, RespBody};

/// The comment sent on an idle stream.
pub const COMMENT: &[u8] = b": keep-alive\n\n";

/// Wraps an event stream so that it sends [`COMMENT`] after `interval` of
/// silence at an event boundary. A zero interval returns `body` unchanged.
pub fn wrap(body: RespBody, interval: Duration) -> RespBody {
    if interval.is_zero() {
        return body;
    }
    KeepAlive {
        inner: body,
        interval,
        timer: Box::pin(tokio::time::sleep(interval)),
        boundary: Boundary::default(),
        done: false,
    }
    .boxed_unsync()
}

/// Where a stream of SSE bytes stands: between events or inside one.
///
/// SSE lines end with CRLF, LF or CR; an event ends at an empty line, i.e. at
/// a line terminator right after another one (or at the start of the stream).
#[derive(Debug, Clone, Default)]
pub struct Boundary {
    /// The last (up to) four bytes passed on.
    tail: [u8; 4],
    len: usize,
}

impl Boundary {
    /// Records bytes passed on.
    pub fn push(&mut self, data: &[u8]) {
        for &b in &data[data.len().saturating_sub(4)..] {
            if self.len == 4 {
                self.tail.copy_within(1..4, 0);
                self.tail[3] = b;
            } else {
                self.tail[self.len] = b;
                self.len += 1;
            }
        }
    }

    /// Whether what was passed on so far ends between two events.
    pub fn at_boundary(&self) -> bool {
        let tail = &self.tail[..self.len];
        let Some(rest) = strip_terminator(tail) else {
            // Nothing sent yet is a boundary; bytes not ending a line are not.
            return tail.is_empty();
        };
        // The last line is empty if the stream started there or another
        // terminator precedes it. A bare CR in `rest` whose LF was stripped
        // is its own terminator, so it counts.
        rest.is_empty() && self.len < 4 || strip_terminator(rest).is_some()
    }
}

/// `bytes` without its final line terminator, if it ends with one.
fn strip_terminator(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        [rest @ .., b'\r', b'\n'] => Some(rest),
        [rest @ .., b'\n'] | [rest @ .., b'\r'] => Some(rest),
        _ => None,
    }
}

struct KeepAlive {
    inner: RespBody,
    interval: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    boundary: Boundary,
    done: bool,
}

impl KeepAlive {
    fn reset(&mut self) {
        let next = tokio::time::Instant::now() + self.interval;
        self.timer.as_mut().reset(next);
    }
}

impl Body for KeepAlive {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if !d.is_empty() {
                        this.boundary.push(d);
                        this.reset();
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => {
                this.done = other.is_none();
                return Poll::Ready(other);
            }
            Poll::Pending => {}
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.reset();
            if this.boundary.at_boundary() {
                this.boundary.push(COMMENT);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(COMMENT)))));
            }
            // Inside an event: wait for the rest of it (its bytes reset the
            // timer), and check again an interval later.
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // Comments add bytes: the length is no longer known.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(chunks: &[&str]) -> bool {
        let mut b = Boundary::default();
        for c in chunks {
            b.push(c.as_bytes());
        }
        b.at_boundary()
    }

    #[test]
    fn the_start_and_the_end_of_an_event_are_boundaries() {
        assert!(after(&[]));
        assert!(after(&["data: x\n\n"]));
        assert!(after(&["data: x\r\n\r\n"]));
        assert!(after(&["data: x\r\r"]));
        assert!(after(&["data: x\n\r\n"]));
        assert!(after(&["id: 1\ndata: x\n\n", "data: y\n\n"]));
        assert!(after(&["\n"]), "an empty line at the start of the stream");
        assert!(after(&[": comment\n\n"]));
    }

    #[test]
    fn inside_an_event_is_not_a_boundary() {
        assert!(!after(&["data: x"]));
        assert!(!after(&["data: x\n"]));
        assert!(!after(&["data: x\r\n"]));
        assert!(!after(&["data: x\n\n", "data: y"]));
        assert!(!after(&["data: x\n\n", "id: 2\n"]));
        assert!(!after(&["da"]));
    }

    #[test]
    fn boundaries_split_across_chunks_are_seen() {
        assert!(after(&["data: x\n", "\n"]));
        assert!(after(&["data: x\r\n", "\r\n"]));
        assert!(after(&["data: x\r", "\n\r", "\n"]));
        assert!(after(&["data: x", "\n", "\n"]));
        assert!(!after(&["data: x\n\n", "e", "v"]));
        assert!(after(&["data: a long event\n", "", "\n"]));
    }

    #[tokio::test(start_paused = true)]
    async fn comments_only_between_events_and_chunks_pass_at_once() {
        use futures::StreamExt;
        use http_body_util::StreamBody;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = tokio_stream_from(rx).map(|b| Ok::<_, BoxError>(Frame::data(b)));
        let mut body = wrap(
            StreamBody::new(stream).boxed_unsync(),
            Duration::from_secs(15),
        );
        // Idle at the start: a comment.
        assert_eq!(next(&mut body).await.as_deref(), Some(COMMENT));
        // Half an event passes through at once, then idleness adds nothing
        // until the event is complete.
        tx.send(Bytes::from_static(b"data: half"))
            .await
            .expect("send");
        assert_eq!(next(&mut body).await.as_deref(), Some(&b"data: half"[..]));
        let held = tokio::time::timeout(Duration::from_secs(60), next(&mut body)).await;
        assert!(held.is_err(), "no comment inside an event: {held:?}");
        tx.send(Bytes::from_static(b"\n\n")).await.expect("send");
        assert_eq!(next(&mut body).await.as_deref(), Some(&b"\n\n"[..]));
        assert_eq!(next(&mut body).await.as_deref(), Some(COMMENT));
        drop(tx);
        assert_eq!(next(&mut body).await, None);
    }

    async fn next(body: &mut RespBody) -> Option<Bytes> {
        body.frame()
            .await
            .map(|f| f.expect("frame").into_data().expect("data"))
    }

    /// A stream of the channel's items.
    fn tokio_stream_from(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl futures::Stream<Item = Bytes> {
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
    }

    #[test]
    fn zero_disables() {
        let body = crate::http::body::empty();
        let wrapped = wrap(body, Duration::ZERO);
        assert!(wrapped.is_end_stream());
    }
}
