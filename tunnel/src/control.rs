//! Reading the control stream without losing frames.
//!
//! `read_frame` is not cancel-safe: if it loses a `select!` race half-way
//! through a frame, the bytes it already read are gone and the stream is out
//! of step. So one task owns the read half and hands whole frames over a
//! channel, whose `recv` is cancel-safe.

use protocol::{Control, FrameError, FrameLimit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::stream::RecvHalf;

/// Frames read from a control stream. The last item is the error that ended it.
pub struct ControlReader {
    rx: mpsc::Receiver<Result<Control, FrameError>>,
    task: JoinHandle<()>,
}

impl ControlReader {
    /// Starts reading `recv` in its own task.
    pub fn spawn(mut recv: RecvHalf) -> ControlReader {
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(async move {
            loop {
                let frame =
                    protocol::read_frame::<Control, _>("control", &mut recv, FrameLimit::CONTROL)
                        .await;
                let last = frame.is_err();
                if tx.send(frame).await.is_err() || last {
                    return;
                }
            }
        });
        ControlReader { rx, task }
    }

    /// The next frame, or the error that ended the stream. Cancel-safe.
    pub async fn next(&mut self) -> Result<Control, FrameError> {
        match self.rx.recv().await {
            Some(frame) => frame,
            None => Err(FrameError::Closed { what: "control" }),
        }
    }
}

impl Drop for ControlReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}
