//! yamux over TLS over TCP: the fallback transport.
//!
//! A yamux `Connection` makes progress only while it is polled, so one driver
//! task owns it: it opens outbound streams on request, hands inbound streams
//! to the owner, and closes the connection when asked.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use futures::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use crate::coalesce::Coalesced;
use crate::error::TunnelError;

/// Receive window for the whole connection: large, so that one bulk stream is
/// not throttled by yamux's window (a known cause of yamux tunnels collapsing
/// in throughput), yet bounded against a peer that never reads.
const MAX_CONNECTION_WINDOW: usize = 1024 * 1024 * 1024;
/// Concurrent streams per connection (each needs 256 KiB of window).
pub const MAX_STREAMS: usize = 1024;

type OpenReply = oneshot::Sender<Result<yamux::Stream, TunnelError>>;

/// A yamux connection served by its own driver task.
pub struct MuxConnection {
    open_tx: mpsc::Sender<OpenReply>,
    inbound: Mutex<mpsc::UnboundedReceiver<yamux::Stream>>,
    closed: CancellationToken,
    close_requested: CancellationToken,
}

/// Which end of the connection this is.
pub enum Side {
    /// The agent (it dialled the TCP connection).
    Client,
    /// The relay.
    Server,
}

impl MuxConnection {
    /// Starts yamux on an established TLS stream.
    pub fn start<T>(io: T, side: Side) -> Arc<MuxConnection>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut cfg = yamux::Config::default();
        cfg.set_max_connection_receive_window(Some(MAX_CONNECTION_WINDOW));
        cfg.set_max_num_streams(MAX_STREAMS);
        // Bigger frames: fewer headers and wakeups on bulk transfers.
        cfg.set_split_send_size(64 * 1024);
        let mode = match side {
            Side::Client => yamux::Mode::Client,
            Side::Server => yamux::Mode::Server,
        };
        // One TLS record and one write per frame, not two (header, body).
        let conn = yamux::Connection::new(Coalesced::new(io), cfg, mode);
        let (open_tx, open_rx) = mpsc::channel(64);
        // Unbounded, yet bounded in practice: yamux refuses streams beyond MAX_STREAMS.
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        let close_requested = CancellationToken::new();
        tokio::spawn(drive(
            conn,
            open_rx,
            in_tx,
            closed.clone(),
            close_requested.clone(),
        ));
        Arc::new(MuxConnection {
            open_tx,
            inbound: Mutex::new(in_rx),
            closed,
            close_requested,
        })
    }

    /// Opens a new outbound stream.
    pub async fn open(&self) -> Result<yamux::Stream, TunnelError> {
        let (tx, rx) = oneshot::channel();
        self.open_tx
            .send(tx)
            .await
            .map_err(|_| TunnelError::Closed("yamux connection ended".into()))?;
        rx.await
            .map_err(|_| TunnelError::Closed("yamux connection ended".into()))?
    }

    /// Waits for the next inbound stream; `None` once the connection is closed.
    pub async fn accept(&self) -> Option<yamux::Stream> {
        self.inbound.lock().await.recv().await
    }

    /// Asks the driver to close the connection gracefully.
    pub fn close(&self) {
        self.close_requested.cancel();
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

async fn drive<T>(
    mut conn: yamux::Connection<Coalesced<T>>,
    mut open_rx: mpsc::Receiver<OpenReply>,
    in_tx: mpsc::UnboundedSender<yamux::Stream>,
    closed: CancellationToken,
    close_requested: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending_open: Option<OpenReply> = None;
    let mut cancel = std::pin::pin!(close_requested.cancelled_owned());
    let outcome = poll_fn(|cx| loop {
        if cancel.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(true));
        }
        if pending_open.is_none() {
            if let Poll::Ready(Some(reply)) = open_rx.poll_recv(cx) {
                pending_open = Some(reply);
            }
        }
        if let Some(reply) = pending_open.take() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(res) => {
                    let _ = reply.send(res.map_err(|e| TunnelError::Closed(e.to_string())));
                    continue;
                }
                Poll::Pending => pending_open = Some(reply),
            }
        }
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                // If the owner is gone the stream is dropped, which resets it.
                let _ = in_tx.send(stream);
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(false)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    match outcome {
        Ok(true) => {
            let _ = poll_fn(|cx| conn.poll_close(cx)).await;
            tracing::debug!("yamux connection closed on request");
        }
        Ok(false) => tracing::debug!("yamux connection closed by peer"),
        Err(e) => tracing::debug!(error = %e, "yamux connection failed"),
    }
    if let Some(reply) = pending_open.take() {
        let _ = reply.send(Err(TunnelError::Closed("yamux connection ended".into())));
    }
    closed.cancel();
}
