//! Idle HTTP connections: a client connection (HTTP/2 above all, which
//! clients keep open) with no request in flight for `--http-idle-timeout`
//! is closed gracefully (GOAWAY), so that idle connections do not pile up
//! to `--max-connections-per-ip`. A request counts as in flight until its
//! response body has ended (a standing event stream keeps its connection).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http::body::{BoxError, RespBody};

/// The requests in flight on one connection, and since when it has had none.
#[derive(Clone)]
pub struct IdleTracker {
    inner: Arc<Inner>,
}

struct Inner {
    active: AtomicUsize,
    /// When the last request ended (or the connection began).
    last: Mutex<Instant>,
    changed: Notify,
}

impl Default for IdleTracker {
    fn default() -> Self {
        IdleTracker {
            inner: Arc::new(Inner {
                active: AtomicUsize::new(0),
                last: Mutex::new(Instant::now()),
                changed: Notify::new(),
            }),
        }
    }
}

impl IdleTracker {
    /// A request arrived: in flight until the returned guard is dropped.
    pub fn begin(&self) -> InFlight {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        self.inner.changed.notify_waiters();
        InFlight {
            inner: self.inner.clone(),
        }
    }

    /// Resolves once the connection has had no request in flight for
    /// `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so no change is missed.
            changed.as_mut().enable();
            if self.inner.active.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let since = *self.inner.last.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = since + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

/// One request in flight (see [`IdleTracker::begin`]).
pub struct InFlight {
    inner: Arc<Inner>,
}

impl InFlight {
    /// Keeps the request in flight until `response`'s body has ended.
    pub fn hold(self, response: Response<RespBody>) -> Response<RespBody> {
        response.map(|body| {
            HeldBody {
                inner: body,
                _in_flight: self,
            }
            .boxed_unsync()
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
        self.inner.changed.notify_waiters();
    }
}

struct HeldBody {
    inner: RespBody,
    _in_flight: InFlight,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends() {
        let t = IdleTracker::default();
        let busy = t.begin();
        let waiting = tokio::spawn({
            let t = t.clone();
            async move {
                t.idle_for(Duration::from_secs(10)).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "idle while a request was in flight");
        let ended = Instant::now();
        drop(busy);
        let idle_at = waiting.await.expect("task");
        assert_eq!(idle_at - ended, Duration::from_secs(10));
    }
}
