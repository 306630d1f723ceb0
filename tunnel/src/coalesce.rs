//! A write buffer between yamux and TLS.
//!
//! yamux writes each frame as two writes, its 12-byte header and then its
//! body, and flushes after every frame. Straight onto a TLS stream, each
//! write is a TLS record of its own and a `write(2)` of its own. Here small
//! writes are kept until yamux flushes, so a small frame (a request, a
//! window update, a close) leaves as one record in one syscall. A write of
//! [`FLUSH_AT`] bytes or more (a bulk frame's body) goes straight through,
//! after what is kept: it fills records of its own, and copying it here
//! would only cost.
//!
//! `futures::io::BufWriter` does the same gathering, but allocates its whole
//! capacity (16 KiB here) at once and keeps it for the connection's life: a
//! relay would hold that for every idle agent on the TCP tunnel, half the
//! 32 KiB an idle agent may cost it. This buffer starts empty, grows with
//! what is written, and gives back more than [`KEEP`] after each flush.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// The most bytes kept for a flush: a TLS record's largest plaintext.
pub const FLUSH_AT: usize = 16 * 1024;

/// The most buffer capacity kept between flushes (small frames' worth).
const KEEP: usize = 4096;

/// `io` with its writes gathered until flushed.
pub struct Coalesced<T> {
    io: T,
    buf: Vec<u8>,
    /// How much of `buf` is written.
    written: usize,
}

impl<T> Coalesced<T> {
    pub fn new(io: T) -> Self {
        Coalesced {
            io,
            buf: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes out what `buf` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        // A buffer a burst grew is not kept by a connection gone idle.
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() + data.len() <= FLUSH_AT {
            this.buf.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        // Too much to keep: what is kept goes first, then this.
        ready!(this.poll_drain(cx))?;
        if data.len() < FLUSH_AT {
            this.buf.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    /// Records each write it is given.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_header_and_its_body_leave_as_one_write_at_the_flush() {
        let mut c = Coalesced::new(Writes::default());
        c.write_all(&[1; 12]).await.expect("header");
        c.write_all(&[2; 100]).await.expect("body");
        assert!(c.io.0.is_empty(), "written before the flush");
        c.flush().await.expect("flush");
        assert_eq!(c.io.0.len(), 1);
        assert_eq!(c.io.0[0].len(), 112);
        assert_eq!(&c.io.0[0][..12], &[1; 12]);
        // Nothing more to write: a flush writes nothing.
        c.flush().await.expect("flush");
        assert_eq!(c.io.0.len(), 1);
    }

    #[tokio::test]
    async fn a_big_write_goes_straight_through_after_what_is_kept_and_nothing_is_lost() {
        let mut c = Coalesced::new(Writes::default());
        let body: Vec<u8> = (0..4 * FLUSH_AT).map(|i| (i % 251) as u8).collect();
        c.write_all(&[9; 12]).await.expect("header");
        c.write_all(&body).await.expect("body");
        // The header alone, then the body in the inner stream's own writes.
        assert_eq!(c.io.0[0], vec![9; 12]);
        assert_eq!(c.io.0[1..].concat(), body);
        // Small writes that together pass FLUSH_AT: in order, none lost.
        let mut c = Coalesced::new(Writes::default());
        let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000]).collect();
        for chunk in &chunks {
            c.write_all(chunk).await.expect("chunk");
        }
        c.close().await.expect("close");
        assert_eq!(c.io.0.concat(), chunks.concat());
        assert!(c.io.0.iter().all(|w| w.len() <= FLUSH_AT));
        assert!(
            c.io.0.len() < chunks.len(),
            "not gathered: {}",
            c.io.0.len()
        );
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, b) = tokio::io::duplex(1024);
        use tokio_util::compat::TokioAsyncReadCompatExt as _;
        let mut a = Coalesced::new(a.compat());
        let mut b = Coalesced::new(b.compat());
        a.write_all(b"hello").await.expect("write");
        a.flush().await.expect("flush");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
    }
}
