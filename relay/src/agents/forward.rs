//! Carrying one client request to an agent and its answer back.
//!
//! One tunnel stream per request: the exchange head, then the request body
//! (streamed as it arrives, or, when the policy has read it whole already,
//! written with the head in one go); the agent answers with a response head and the
//! response body, streamed back as it arrives. Nothing is buffered whole, and
//! backpressure is the tunnel's flow control.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use protocol::{ExchangeHead, FrameLimit, ResponseHead, StreamOpen};
use tokio::io::AsyncWriteExt;

use crate::agents::registry::AgentSession;
use crate::http::body::ReqBody;
use crate::http::headers;
use crate::metrics::Metrics;
use tunnel::TunnelBody;
use tunnel::{RecvHalf, SendHalf};

/// Why an exchange produced no response from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("could not open a stream to the agent: {0}")]
    Open(String),
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent ended the exchange without answering: {0}")]
    NoAnswer(String),
    /// The agent answered with something that is no response head (a frame
    /// that does not decode, an oversized one, an invalid status): it broke
    /// the protocol, and its connection is closed.
    #[error("the agent broke the tunnel protocol: {0}")]
    Violation(String),
    /// Nothing at all came back from the agent's QUIC connection (not even
    /// an acknowledgement of the request) within [`PEER_GONE_AFTER`]: its
    /// process is gone without a goodbye. It never read the request.
    #[error("the agent's tunnel went silent (no packet within {0:?} of the request); it is gone")]
    PeerGone(Duration),
}

impl ForwardError {
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::Open(_) | ForwardError::PeerGone(_) => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::NoAnswer(_) | ForwardError::Violation(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Ends `agent`'s connection if `result` shows it broke the protocol: a
/// peer that sends what the protocol does not allow is not trusted with
/// further requests. Its other in-flight exchanges fail; other agents, and
/// its route's other replicas, are not touched.
pub fn disconnect_on_violation<T>(agent: &AgentSession, result: &Result<T, ForwardError>) {
    if let Err(ForwardError::Violation(why)) = result {
        tracing::warn!(session = agent.id, error = %why, "agent broke the tunnel protocol; closing its connection");
        agent.conn.close("protocol violation");
    }
}

/// A stream opened to an agent, the protocol version that agent speaks, and
/// what tells whether the agent is still there.
pub type Opened = (SendHalf, RecvHalf, u16, Liveness);

/// How long an exchange waits for any sign of life from a QUIC agent (a
/// live one acknowledges the request within milliseconds) before the agent
/// is taken for gone. An agent whose process ended without its goodbye
/// reaching the relay would otherwise hold requests until the keep-alive
/// limit (three keep-alive intervals).
pub const PEER_GONE_AFTER: Duration = Duration::from_secs(1);

/// Whether anything came from the agent's connection since the stream was
/// opened (QUIC: received datagrams; TCP tunnels end with the connection).
pub struct Liveness {
    agent: Arc<AgentSession>,
    heard: Option<u64>,
    /// Give the exchange up when the agent is silent (another replica can
    /// take the request, and the request only reads); else only mark the
    /// agent silent and go on waiting.
    give_up: bool,
}

impl Liveness {
    fn silent(&self) -> bool {
        self.heard.is_some() && self.agent.conn.received_datagrams() == self.heard
    }
}

/// Opens a stream to `agent` for one exchange. An agent that stays silent
/// for [`PEER_GONE_AFTER`] is marked so ([`AgentSession::mark_silent`]: other
/// replicas are picked first until it is heard from again); with `give_up`
/// (another replica could take the request, and sending it twice changes
/// nothing) the exchange also ends with [`ForwardError::PeerGone`]. Without
/// it the exchange waits for the answer or the keep-alive limit as before:
/// an agent that is merely slow to acknowledge (a laptop under load) may
/// have run the request, and still answers it.
pub async fn open(agent: &Arc<AgentSession>, give_up: bool) -> Result<Opened, ForwardError> {
    let heard = agent.conn.received_datagrams();
    let (send, recv) = agent
        .conn
        .open_bi()
        .await
        .map_err(|e| ForwardError::Open(e.to_string()))?;
    let liveness = Liveness {
        agent: agent.clone(),
        heard,
        give_up,
    };
    Ok((send, recv, agent.protocol_version, liveness))
}

/// A request body as the exchange carries it.
pub enum Upload {
    /// Read whole already (a JSON-RPC body the policy has read, or none):
    /// written with the head and the end of the stream in one write, so a
    /// small request leaves in one packet and no task is spawned for it.
    Whole(Bytes),
    /// Streamed into the tunnel as it arrives, by its own task.
    Streamed(ReqBody),
}

/// Bodies of known length up to this size are read whole before they are
/// forwarded, so that an exchange whose agent turns out to be gone can be
/// sent again to another replica.
pub const RESENDABLE: u64 = 64 * 1024;

/// Whole bodies up to this size are copied behind the head (one write);
/// larger ones follow it in a second write.
const COALESCE: usize = 64 * 1024;

/// Sends `head` and `body` on an opened stream and returns the agent's
/// response. Body bytes both ways are counted in `metrics`.
pub async fn exchange(
    (mut send, mut recv, version, liveness): Opened,
    head: ExchangeHead,
    body: Upload,
    response_timeout: Duration,
    metrics: &Metrics,
) -> Result<Response<Counted<TunnelBody>>, ForwardError> {
    let empty = head.body == protocol::BodyKind::Empty;
    let mut out = BytesMut::new();
    let encoded = if version >= 5 {
        protocol::encode_frame(
            "exchange",
            &StreamOpen::Exchange(head),
            FrameLimit::HEAD,
            &mut out,
        )
    } else if version == 4 {
        // A version 4 agent knows no grant's resources or prompts: its
        // second decision lets a grantee read and get all of them; the
        // relay has refused what the grant does not name.
        protocol::encode_frame("exchange", &head.as_v4(), FrameLimit::HEAD, &mut out)
    } else if version == 3 {
        // A version 3 agent knows no groups: its second decision with the
        // owner's policy sees none (a permit by group is refused there).
        protocol::encode_frame("exchange", &head.as_v3(), FrameLimit::HEAD, &mut out)
    } else {
        // A version 2 agent knows no grants: it decides with the owner's
        // policy alone (a grantee is refused on that laptop).
        protocol::encode_frame("exchange", &head.as_v2(), FrameLimit::HEAD, &mut out)
    };
    encoded.map_err(|e| ForwardError::Open(e.to_string()))?;
    let open_err = |e: std::io::Error| ForwardError::Open(e.to_string());

    let upload = match body {
        Upload::Whole(bytes) => {
            metrics.bytes_to_agent().inc_by(bytes.len() as u64);
            if bytes.len() <= COALESCE {
                out.extend_from_slice(&bytes);
                send.write_all(&out).await.map_err(open_err)?;
            } else {
                send.write_all(&out).await.map_err(open_err)?;
                send.write_all(&bytes).await.map_err(open_err)?;
            }
            send.finish().await.map_err(open_err)?;
            None
        }
        Upload::Streamed(_) if empty => {
            send.write_all(&out).await.map_err(open_err)?;
            send.finish().await.map_err(open_err)?;
            None
        }
        Upload::Streamed(body) => {
            send.write_all(&out).await.map_err(open_err)?;
            send.flush().await.map_err(open_err)?;
            Some(tokio::spawn(upload(body, send, metrics.bytes_to_agent().clone())).abort_handle())
        }
    };

    let read = {
        let read = tokio::time::timeout(
            response_timeout,
            protocol::read_frame::<ResponseHead, _>("response", &mut recv, FrameLimit::HEAD),
        );
        tokio::pin!(read);
        let probe = tokio::time::sleep(PEER_GONE_AFTER.min(response_timeout));
        tokio::pin!(probe);
        let mut probed = false;
        loop {
            tokio::select! {
                r = &mut read => break r,
                _ = &mut probe, if !probed => {
                    probed = true;
                    if liveness.silent() {
                        liveness.agent.mark_silent();
                        if liveness.give_up {
                            if let Some(u) = &upload {
                                u.abort();
                            }
                            return Err(ForwardError::PeerGone(PEER_GONE_AFTER));
                        }
                    }
                }
            }
        }
    };
    let head = match read {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            if let Some(u) = &upload {
                u.abort();
            }
            return Err(match e {
                protocol::FrameError::Decode(d) => ForwardError::Violation(d.to_string()),
                other => ForwardError::NoAnswer(other.to_string()),
            });
        }
        Err(_) => {
            if let Some(u) = &upload {
                u.abort();
            }
            return Err(ForwardError::Timeout(response_timeout));
        }
    };
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| ForwardError::Violation(format!("invalid status {}", head.status)))?;
    let mut response = Response::new(Counted {
        inner: TunnelBody::new(recv, upload),
        counter: metrics.bytes_from_agent().clone(),
    });
    *response.status_mut() = status;
    *response.headers_mut() = headers::from_tunnel(head.headers);
    Ok(response)
}

/// Streams the client's request body into the tunnel, then ends that direction.
/// If the client's body fails, the send half is dropped unfinished, which
/// aborts the stream: the agent sees an error, not a short body.
async fn upload(mut body: ReqBody, mut send: tunnel::SendHalf, sent: Counter) {
    while let Some(frame) = body.frame().await {
        let data: Bytes = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers are not forwarded
            },
            Err(e) => {
                tracing::debug!(error = %e, "client request body failed; aborting the exchange");
                return;
            }
        };
        // Counted as handed to the tunnel (before the agent can answer).
        sent.inc_by(data.len() as u64);
        if send.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// A body whose data bytes are added to a counter as they pass.
pub struct Counted<B> {
    inner: B,
    counter: Counter,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
