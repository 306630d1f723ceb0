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

/// The room made for a body's first frame. Most bodies (a JSON-RPC answer,
/// an error) are far smaller than [`CHUNK`]; the room doubles, up to
/// [`CHUNK`], each time a frame fills it, so a large body is soon read in
/// full-size frames.
const FIRST_ROOM: usize = 4 * 1024;

/// A response body fed by a tunnel stream. When it is dropped (the client went
/// away), the task still uploading the request body is stopped too.
pub struct TunnelBody {
    recv: Option<RecvHalf>,
    buf: BytesMut,
    /// The room to make before the next read (see [`FIRST_ROOM`]).
    room: usize,
    /// A read failed after bytes that are still to be handed out.
    failed: Option<std::io::Error>,
    upload: Option<AbortHandle>,
}

impl TunnelBody {
    pub fn new(recv: RecvHalf, upload: Option<AbortHandle>) -> Self {
        TunnelBody {
            recv: Some(recv),
            buf: BytesMut::new(),
            room: FIRST_ROOM,
            failed: None,
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
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if this.buf.capacity() < this.room {
            this.buf.reserve(this.room);
        }
        // Whatever the stream holds now goes into one frame, up to the room: a
        // QUIC stream yields about a packet per read, and a frame per packet
        // would cost the client's side a TLS record and a write each.
        let mut end = false;
        loop {
            match tokio_util::io::poll_read_buf(Pin::new(&mut *recv), cx, &mut this.buf) {
                Poll::Ready(Ok(0)) => {
                    end = true;
                    break;
                }
                // Up to the room made: growing the buffer mid-frame would
                // copy what it holds.
                Poll::Ready(Ok(_)) if this.buf.len() < this.buf.capacity().min(CHUNK) => {}
                Poll::Ready(Ok(_)) | Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    // The bytes before the failure go first.
                    end = true;
                    this.failed = Some(e);
                    break;
                }
            }
        }
        if end {
            this.recv = None;
        }
        if !this.buf.is_empty() {
            if this.buf.len() >= this.room {
                this.room = (this.room * 2).min(CHUNK);
            }
            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
        }
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if end {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
