//! Reading the control stream without losing frames.
//!
//! `read_frame` is not cancel-safe: if it loses a `select!` race half-way
//! through a frame, the bytes it already read are gone and the stream is out
//! of step. So the reader keeps what it has read in its own buffer, and
//! decodes a frame only once the buffer holds all of it: a `next` cancelled
//! half-way loses nothing. (No task and no channel, and no buffer between
//! frames: an idle session holds only the stream.)

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use protocol::{Control, FrameError, FrameLimit};
use tokio::io::{AsyncRead, ReadBuf};

use crate::stream::RecvHalf;

/// Frames read from a control stream. The last item is the error that ended it.
pub struct ControlReader {
    recv: RecvHalf,
    buf: BytesMut,
    /// The stream has ended (with the error already returned).
    ended: bool,
}

/// The most read at once: control frames are a few bytes.
const READ_ROOM: usize = 256;

impl ControlReader {
    /// Starts reading `recv`.
    pub fn spawn(recv: RecvHalf) -> ControlReader {
        ControlReader {
            recv,
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// The next frame, or the error that ended the stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Control, FrameError> {
        const WHAT: &str = "control";
        if self.ended {
            return Err(FrameError::Closed { what: WHAT });
        }
        loop {
            match protocol::decode_frame::<Control>(WHAT, &mut self.buf, FrameLimit::CONTROL) {
                Ok(Some(frame)) => {
                    if self.buf.is_empty() {
                        // Nothing of the next frame yet: no memory held
                        // while the session waits for it.
                        self.buf = BytesMut::new();
                    }
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    self.ended = true;
                    return Err(e.into());
                }
            }
            // Read into room on the stack, within one poll: bytes taken from
            // the stream go into `buf` at once (cancel-safe), and nothing is
            // allocated for a read that waits.
            let read = poll_fn(|cx| {
                let mut room = [0u8; READ_ROOM];
                let mut room = ReadBuf::new(&mut room);
                match Pin::new(&mut self.recv).poll_read(cx, &mut room) {
                    Poll::Ready(Ok(())) => {
                        self.buf.extend_from_slice(room.filled());
                        Poll::Ready(Ok(room.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match read {
                Ok(0) => {
                    self.ended = true;
                    return Err(if self.buf.is_empty() {
                        FrameError::Closed { what: WHAT }
                    } else {
                        FrameError::Truncated { what: WHAT }
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    self.ended = true;
                    return Err(e.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use protocol::{Control, FrameError, FrameLimit};
    use tokio::io::AsyncWriteExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::ControlReader;
    use crate::mux::{MuxConnection, Side};
    use crate::TunnelConnection;

    fn frame(control: &Control) -> BytesMut {
        let mut out = BytesMut::new();
        protocol::encode_frame("control", control, FrameLimit::CONTROL, &mut out).expect("encode");
        out
    }

    /// A `next` cancelled half-way through a frame loses none of it; the
    /// end of the stream comes after the last whole frame, and stays.
    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let remote = "127.0.0.1:1".parse().expect("addr");
        let client = TunnelConnection::Mux {
            conn: MuxConnection::start(a.compat(), Side::Client),
            remote,
        };
        let server = TunnelConnection::Mux {
            conn: MuxConnection::start(b.compat(), Side::Server),
            remote,
        };
        let (mut send, _recv) = client.open_bi().await.expect("open");
        let mut frames = frame(&Control::Ping { nonce: 7 });
        frames.extend_from_slice(&frame(&Control::Pong { nonce: 8 }));
        // The first frame and a half of the second.
        let split = frames.len() - 2;
        send.write_all(&frames[..split]).await.expect("write");
        send.flush().await.expect("flush");
        let (_send, recv) = server.accept_bi().await.expect("accept");
        let mut reader = ControlReader::spawn(recv);
        assert!(matches!(
            reader.next().await,
            Ok(Control::Ping { nonce: 7 })
        ));
        // Waits for the rest of the second frame: cancelled.
        let waited = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(waited.is_err(), "{waited:?}");
        send.write_all(&frames[split..]).await.expect("write");
        send.finish().await.expect("finish");
        assert!(matches!(
            reader.next().await,
            Ok(Control::Pong { nonce: 8 })
        ));
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Closed { .. })
        ));
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Closed { .. })
        ));
    }

    /// A stream that ends inside a frame, or sends a frame over the limit,
    /// ends with that error.
    #[tokio::test]
    async fn a_cut_or_oversized_frame_ends_the_stream() {
        for (bytes, truncated) in [
            (frame(&Control::Ping { nonce: 1 })[..3].to_vec(), true),
            (u32::MAX.to_be_bytes().to_vec(), false),
        ] {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let remote = "127.0.0.1:1".parse().expect("addr");
            let client = TunnelConnection::Mux {
                conn: MuxConnection::start(a.compat(), Side::Client),
                remote,
            };
            let server = TunnelConnection::Mux {
                conn: MuxConnection::start(b.compat(), Side::Server),
                remote,
            };
            let (mut send, _recv) = client.open_bi().await.expect("open");
            send.write_all(&bytes).await.expect("write");
            send.finish().await.expect("finish");
            let (_send, recv) = server.accept_bi().await.expect("accept");
            let mut reader = ControlReader::spawn(recv);
            let got = reader.next().await;
            if truncated {
                assert!(matches!(got, Err(FrameError::Truncated { .. })), "{got:?}");
            } else {
                assert!(matches!(got, Err(FrameError::Decode(_))), "{got:?}");
            }
            assert!(reader.next().await.is_err());
        }
    }
}
