//! One tunnel session: handshake, then serve streams and keep the control
//! stream alive until the connection ends or the agent stops.

use std::sync::Arc;
use std::time::Duration;

use protocol::{
    Control, FrameLimit, GoAwayReason, Hello, HelloReply, RouteOffer, UpstreamKind, Welcome,
    PROTOCOL_VERSION,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::{RecvHalf, SendHalf, Transport, TunnelConnection};

use crate::gate::Gate;
use crate::inspector::{Arrival, Held, Inspector};
use crate::report::{Reporter, RequestLine};
use crate::upstream::Upstream;

/// What the agent presents in its hello.
pub struct Identity {
    pub token: String,
    pub instance_id: [u8; 16],
    pub routes: Vec<String>,
    /// What serves the routes.
    pub kind: UpstreamKind,
    /// The owner's policy as sent to the relay (`None`: only the owner).
    pub policy: Option<String>,
    /// Offer `accept_tool_changes` on every route.
    pub accept_tool_changes: bool,
}

/// What serves a session's exchanges: the gate that decides each one, the
/// local server, and who hears about each request.
pub struct Serving {
    pub gate: Gate,
    pub upstream: Arc<Upstream>,
    pub reporter: Arc<dyn Reporter>,
    /// `--inspect`: the live view every exchange is shown to (`None`: off,
    /// and no exchange does any work for it).
    pub inspector: Option<Arc<Inspector>>,
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The relay refused the hello.
    Refused(protocol::Refusal),
    /// The relay told us not to come back (credential revoked).
    Disconnected(String),
    /// The connection was lost or the relay is restarting: reconnect.
    Lost(String),
    /// The agent was asked to stop and drained.
    Stopped,
    /// A better connection (QUIC after TCP) is ready; continue on it.
    Upgrade(TunnelConnection),
}

/// How long a stopping agent waits for its goodbye to reach the relay.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// Knobs of a session.
pub struct SessionConfig {
    /// How long in-flight requests may take to finish when the agent stops.
    pub drain_timeout: Duration,
    /// When on TCP in auto mode: how often to try QUIC again (None: never).
    pub quic_retry: Option<Duration>,
    /// Where the relay's list of its nodes goes ([`Control::Nodes`];
    /// `None`: ignored).
    pub nodes: Option<tokio::sync::watch::Sender<Option<NodeList>>>,
}

/// The live nodes of the relay, as one of them said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList {
    /// The address of the node that said it (this session's).
    pub this: String,
    /// Every live node's address, `this` among them.
    pub addresses: Vec<String>,
}

/// A session the relay accepted: its connection, the relay's welcome, and
/// the control stream.
pub struct Established {
    pub conn: TunnelConnection,
    pub welcome: Welcome,
    pub send: SendHalf,
    pub recv: RecvHalf,
}

/// Sends the hello and reads the reply.
pub async fn handshake(
    conn: TunnelConnection,
    identity: &Identity,
) -> Result<Established, SessionEnd> {
    let lost = |e: &dyn std::fmt::Display| SessionEnd::Lost(format!("handshake: {e}"));
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        credential: identity.token.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        instance_id: identity.instance_id,
        routes: identity
            .routes
            .iter()
            .map(|r| RouteOffer {
                name: r.clone(),
                kind: identity.kind,
                policy: identity.policy.clone(),
                accept_tool_changes: identity.accept_tool_changes,
            })
            .collect(),
    };
    protocol::write_frame("hello", &mut send, &hello, FrameLimit::CONTROL)
        .await
        .map_err(|e| lost(&e))?;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        protocol::read_frame::<HelloReply, _>("hello reply", &mut recv, FrameLimit::CONTROL),
    )
    .await
    .map_err(|_| SessionEnd::Lost("the relay did not answer the hello within 10s".into()))?
    .map_err(|e| lost(&e))?;
    match reply {
        HelloReply::Welcome(welcome) => Ok(Established {
            conn,
            welcome,
            send,
            recv,
        }),
        HelloReply::Refused(r) => Err(SessionEnd::Refused(r)),
    }
}

/// Serves an established session until it ends.
pub async fn serve(
    session: Established,
    serving: Arc<Serving>,
    stop: CancellationToken,
    config: &SessionConfig,
    dialer: Option<&crate::tunnel::dial::Dialer>,
) -> SessionEnd {
    let Established {
        conn,
        welcome,
        mut send,
        recv,
    } = session;
    let mut control = tunnel::ControlReader::spawn(recv);
    let in_flight = TaskTracker::new();
    let accept_task = tokio::spawn(accept_streams(
        conn.clone(),
        serving,
        Arc::from(welcome.owner.as_str()),
        in_flight.clone(),
    ));
    let interval = Duration::from_millis(u64::from(welcome.keepalive_interval_ms.max(100)));
    let mut ping = tokio::time::interval(interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence_limit = interval * 3;
    let mut deadline = Instant::now() + silence_limit;
    let mut nonce: u64 = 0;
    // On TCP in auto mode, QUIC is tried again now and then.
    let retry_every = match (conn.transport(), config.quic_retry, dialer) {
        (Transport::Tcp, Some(d), Some(_)) => Some(d),
        _ => None,
    };
    let mut quic_retry_at = retry_every.map(|d| Instant::now() + d);
    let mut probe: Option<
        std::pin::Pin<Box<dyn std::future::Future<Output = Option<TunnelConnection>> + Send + '_>>,
    > = None;

    let end = loop {
        tokio::select! {
            _ = ping.tick() => {
                nonce = nonce.wrapping_add(1);
                if protocol::write_frame("control", &mut send, &Control::Ping { nonce }, FrameLimit::CONTROL).await.is_err() {
                    break SessionEnd::Lost("the control stream failed".into());
                }
            }
            frame = control.next() => {
                deadline = Instant::now() + silence_limit;
                match frame {
                    Ok(Control::Ping { nonce }) => {
                        let _ = protocol::write_frame("control", &mut send, &Control::Pong { nonce }, FrameLimit::CONTROL).await;
                    }
                    Ok(Control::Pong { .. }) => {}
                    Ok(Control::Nodes { this, addresses }) => {
                        tracing::debug!(this, ?addresses, "the relay's nodes");
                        if let Some(nodes) = &config.nodes {
                            nodes.send_replace(Some(NodeList { this, addresses }));
                        }
                    }
                    Ok(Control::GoAway { reason, reconnect, message }) => {
                        tracing::info!(?reason, message, "the relay said goodbye");
                        let _ = send.finish().await;
                        if !reconnect {
                            drain_then_close(conn.clone(), in_flight.clone(), Duration::from_secs(1));
                            break SessionEnd::Disconnected(message);
                        }
                        // In-flight requests finish on the old connection while we reconnect.
                        drain_then_close(conn.clone(), in_flight.clone(), config.drain_timeout);
                        break SessionEnd::Lost(format!("relay going away: {message}"));
                    }
                    Err(e) => {
                        conn.close("control stream ended");
                        break SessionEnd::Lost(format!("control stream: {e}"));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                conn.close("keep-alive timeout");
                break SessionEnd::Lost(format!("no word from the relay for {silence_limit:?}"));
            }
            _ = conn.closed() => {
                break SessionEnd::Lost("the tunnel connection closed".into());
            }
            _ = stop.cancelled() => {
                tracing::info!("stopping: telling the relay, then draining in-flight requests");
                let _ = protocol::write_frame("control", &mut send, &Control::GoAway {
                    reason: GoAwayReason::AgentLeaving,
                    reconnect: false,
                    message: "agent stopping".into(),
                }, FrameLimit::CONTROL).await;
                in_flight.close();
                if tokio::time::timeout(config.drain_timeout, in_flight.wait()).await.is_err() {
                    tracing::warn!(remaining = in_flight.len(), "drain timed out; aborting the rest");
                }
                // The goodbye must reach the relay before the process exits,
                // or the relay keeps routing to a tunnel nobody serves: wait
                // (bounded) until the relay has acknowledged the end of the
                // control stream, then until the close has left.
                let _ = send.finish_acknowledged(GOODBYE_WAIT).await;
                conn.close_and_flush("agent stopped", GOODBYE_WAIT).await;
                break SessionEnd::Stopped;
            }
            _ = tokio::time::sleep_until(quic_retry_at.unwrap_or_else(Instant::now)), if quic_retry_at.is_some() && probe.is_none() => {
                if let Some(d) = dialer {
                    probe = Some(Box::pin(d.probe_quic()));
                }
            }
            new = async { match probe.as_mut() { Some(p) => p.await, None => std::future::pending().await } }, if probe.is_some() => {
                probe = None;
                if let Some(new) = new {
                    tracing::info!("QUIC works again; moving the tunnel from TCP to QUIC");
                    // The relay ends this session when the new one registers;
                    // until then in-flight requests finish here.
                    drain_then_close(conn.clone(), in_flight.clone(), config.drain_timeout);
                    break SessionEnd::Upgrade(new);
                }
                tracing::debug!("QUIC still unavailable; staying on TCP");
                quic_retry_at = retry_every.map(|d| Instant::now() + d);
            }
        }
    };
    // The accept task ends by itself when the connection closes: streams the
    // relay opened before its goodbye are still served meanwhile.
    drop(accept_task);
    end
}

/// Lets in-flight exchanges finish (bounded), then closes the connection.
fn drain_then_close(conn: TunnelConnection, in_flight: TaskTracker, timeout: Duration) {
    tokio::spawn(async move {
        // Streams the relay opened just before its goodbye still arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        in_flight.close();
        let _ = tokio::time::timeout(timeout, in_flight.wait()).await;
        conn.close("drained");
    });
}

async fn accept_streams(
    conn: TunnelConnection,
    serving: Arc<Serving>,
    owner: Arc<str>,
    in_flight: TaskTracker,
) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return,
        };
        let serving = serving.clone();
        let owner = owner.clone();
        in_flight.spawn(async move {
            let mut head = match protocol::read_exchange(&mut recv).await {
                Ok(head) => head,
                Err(e) => {
                    tracing::warn!(error = %e, "bad exchange header from the relay; dropping the stream");
                    return;
                }
            };
            tracing::debug!(request_id = head.request_id, method = head.method, path = head.path, subject = head.identity.subject, "exchange");
            // For the inspector only; never for the local server.
            let relay_rules = take_header(&mut head.headers, protocol::RELAY_RULES_HEADER);
            let started = Instant::now();
            let inspected = serving
                .inspector
                .as_ref()
                .map(|i| (i, i.tap(), Arrival::new(&head, started.into_std(), relay_rules.as_deref())));
            let tap = inspected.as_ref().map(|(_, tap, _)| tap);
            let (body, mut summary) = serving.gate.admit(&head, &owner, recv, &mut send, tap).await;
            let gate_done = std::time::Instant::now();
            let identity = head.identity.subject.clone();
            let request_id = head.request_id.clone();
            let mut held = Held::default();
            if let Some(body) = body {
                // `--approve`: a write waits here for the owner's word.
                if let Some((inspector, tap, arrival)) = &inspected {
                    held = inspector.hold(arrival, &mut summary, tap, &mut send).await;
                } else {
                    held.go = true;
                }
                if held.go {
                    serving.upstream.serve(head, send, body, tap).await;
                }
            }
            if let Some((inspector, tap, arrival)) = &inspected {
                inspector.record(arrival, gate_done, &summary, tap, held);
            }
            serving.reporter.request(&RequestLine {
                request_id,
                identity,
                summary,
                elapsed: started.elapsed(),
            });
        });
    }
}

/// Removes every header `name` from `headers`; the last one's value, if any.
fn take_header(headers: &mut Vec<protocol::Header>, name: &str) -> Option<String> {
    let mut value = None;
    headers.retain(|h| {
        if h.name.eq_ignore_ascii_case(name) {
            value = Some(String::from_utf8_lossy(&h.value).into_owned());
            false
        } else {
            true
        }
    });
    value
}
