//! The two directions of a tunnel stream, whatever the transport.
//!
//! Semantics are the same on both transports: `shutdown()` (or [`SendHalf::finish`])
//! ends the sending direction cleanly; dropping a [`SendHalf`] that was not
//! finished aborts the stream, so the peer sees an error rather than a body
//! that looks complete but was cut short.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio_util::compat::Compat;

/// A yamux stream seen through tokio's I/O traits.
pub type MuxStream = Compat<yamux::Stream>;

/// The sending direction of a tunnel stream.
pub struct SendHalf {
    inner: SendInner,
    finished: bool,
}

enum SendInner {
    Quic(quinn::SendStream),
    Mux(WriteHalf<MuxStream>),
}

/// The receiving direction of a tunnel stream.
pub struct RecvHalf {
    inner: RecvInner,
}

enum RecvInner {
    Quic(quinn::RecvStream),
    Mux(ReadHalf<MuxStream>),
}

impl SendHalf {
    pub(crate) fn quic(s: quinn::SendStream) -> Self {
        SendHalf {
            inner: SendInner::Quic(s),
            finished: false,
        }
    }

    /// Ends the sending direction cleanly: the peer reads to end of stream.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await
    }

    /// Ends the sending direction and, on QUIC, waits (up to `max_wait`)
    /// until the peer has acknowledged every byte. Closing the connection
    /// right after a plain `finish` can discard data still in flight; an agent
    /// that drains before it stops must use this.
    pub async fn finish_acknowledged(&mut self, max_wait: std::time::Duration) -> io::Result<()> {
        self.shutdown().await?;
        if let SendInner::Quic(s) = &mut self.inner {
            let _ = tokio::time::timeout(max_wait, s.stopped()).await;
        }
        Ok(())
    }
}

impl RecvHalf {
    pub(crate) fn quic(s: quinn::RecvStream) -> Self {
        RecvHalf {
            inner: RecvInner::Quic(s),
        }
    }
}

/// Splits a yamux stream into the two halves.
pub(crate) fn split_mux(s: yamux::Stream) -> (SendHalf, RecvHalf) {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let (r, w) = tokio::io::split(s.compat());
    (
        SendHalf {
            inner: SendInner::Mux(w),
            finished: false,
        },
        RecvHalf {
            inner: RecvInner::Mux(r),
        },
    )
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        match &mut self.inner {
            // quinn finishes a dropped stream; we want an abort instead.
            SendInner::Quic(s) => {
                let _ = s.reset(quinn::VarInt::from_u32(1));
            }
            // A yamux stream whose halves are both dropped without close is
            // reset by yamux itself.
            SendInner::Mux(_) => {}
        }
    }
}

impl AsyncWrite for SendHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            SendInner::Quic(s) => Pin::new(s).poll_write(cx, buf).map_err(io::Error::from),
            SendInner::Mux(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            SendInner::Quic(s) => Pin::new(s).poll_flush(cx),
            SendInner::Mux(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = match &mut self.inner {
            SendInner::Quic(s) => Pin::new(s).poll_shutdown(cx),
            SendInner::Mux(s) => Pin::new(s).poll_shutdown(cx),
        };
        if let Poll::Ready(Ok(())) = res {
            self.finished = true;
        }
        res
    }
}

impl AsyncRead for RecvHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.inner {
            RecvInner::Quic(s) => Pin::new(s).poll_read(cx, buf),
            RecvInner::Mux(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}
