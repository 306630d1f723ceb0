//! An HTTP body read straight from a tunnel stream, without buffering it whole.
//! The relay uses it for responses, the agent for request bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::stream::RecvHalf;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;

/// Bytes read from the tunnel per frame, at most.
const CHUNK: usize = 64 * 1024;

/// A response body fed by a tunnel stream. When it is dropped (the client went
/// away), the task still uploading the request body is stopped too.
pub struct TunnelBody {
    recv: Option<RecvHalf>,
    buf: BytesMut,
    upload: Option<AbortHandle>,
}

impl TunnelBody {
    pub fn new(recv: RecvHalf, upload: Option<AbortHandle>) -> Self {
        TunnelBody {
            recv: Some(recv),
            buf: BytesMut::new(),
            upload,
        }
    }
}

impl Drop for TunnelBody {
    fn drop(&mut self) {
        // Dropped before the end: the client went away, so stop uploading. A
        // body read to its end leaves the upload to finish by itself (the
        // client's end-of-stream may still be in flight, and cutting it off
        // would reset the client's request stream).
        if self.recv.is_some() {
            if let Some(upload) = self.upload.take() {
                upload.abort();
            }
        }
    }
}

impl Body for TunnelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if this.buf.capacity() < CHUNK {
            this.buf.reserve(CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(recv), cx, &mut this.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => {
                this.recv = None;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze())))),
            Poll::Ready(Err(e)) => {
                this.recv = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
