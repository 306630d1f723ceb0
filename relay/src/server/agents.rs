//! The agent side of the relay: tunnel handshake, control stream, liveness.
//!
//! Every tunnel connection, QUIC or TLS+yamux, arrives here. The agent opens
//! the first stream and says [`Hello`]; we check its protocol version, its
//! credential and its routes, and answer [`Welcome`] or a precise [`Refusal`].
//! The stream then carries pings and goodbyes until the connection ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use protocol::frame::{decode_payload, read_payload};
use protocol::handshake::{peek_version, version_mismatch_message};
use protocol::{
    AcceptedRoute, Control, FrameLimit, GoAwayReason, Hello, HelloReply, Refusal, RefusalCode,
    Welcome, MIN_PROTOCOL_VERSION, NODES_VERSION, PROTOCOL_VERSION,
};
use tokio::time::{timeout, Instant};
use tunnel::{ControlReader, RecvHalf, SendHalf, TunnelConnection};

use crate::agents::registry::{AgentSession, KillReason, ServedRoute};
use crate::state::SharedState;
use crate::store::token::TokenKind;
use crate::store::{RouteClaim, TokenRejection};
use ::store::Change;

/// Serves one tunnel connection until it ends.
pub fn serve_connection(
    state: SharedState,
    conn: TunnelConnection,
) -> impl std::future::Future<Output = ()> {
    let remote = conn.remote_addr();
    // Boxed: the set-up (the control stream, the handshake and its token
    // lookups) is a future larger than the control loop; on its own it is
    // freed once the agent is connected, and the session's task keeps room
    // only for what a connected agent needs. The connection goes into it
    // (the session keeps its own handle): the task holds no other.
    let connecting = Box::pin(connect(state.clone(), conn));
    async move {
        let Some((session, mut send, control)) = connecting.await else {
            return;
        };
        let transport = session.transport();
        tracing::info!(
            session = session.id,
            owner = %session.owner,
            routes = ?session.routes,
            %remote,
            %transport,
            "agent connected"
        );
        let _counted = state.metrics.agent_connected(transport);
        if let Some(node) = &state.cluster {
            crate::server::membership::agent_session(
                &state,
                node,
                &session.routes,
                &session.instance_id,
                true,
            )
            .await;
        }
        let outcome = control_loop(&state, &session, &mut send, control).await;
        state.registry.unregister(&session);
        session.set_draining();
        if let Some(node) = &state.cluster {
            // Unless a newer session of the same agent on this node holds it.
            let routes: Vec<String> = session
                .routes
                .iter()
                .filter(|r| {
                    state
                        .registry
                        .pick_instance(r, session.instance_id)
                        .is_none()
                })
                .cloned()
                .collect();
            crate::server::membership::agent_session(
                &state,
                node,
                &routes,
                &session.instance_id,
                false,
            )
            .await;
        }
        let transport = session.transport();
        tracing::info!(session = session.id, %remote, %transport, outcome, "agent disconnected");
    }
}

/// Accepts the agent's control stream and runs the handshake; `None` when
/// the agent was refused or went away (the reason is logged).
async fn connect(
    state: SharedState,
    conn: TunnelConnection,
) -> Option<(Arc<AgentSession>, SendHalf, ControlReader)> {
    let remote = conn.remote_addr();
    let transport = conn.transport();
    let accepted = timeout(state.config.handshake_timeout, conn.accept_bi()).await;
    let (mut send, mut recv) = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, %transport, error = %e, "tunnel closed before the handshake");
            return None;
        }
        Err(_) => {
            tracing::info!(%remote, %transport, "tunnel handshake timed out");
            conn.close("handshake timeout");
            return None;
        }
    };
    let session = match handshake(&state, &conn, &mut send, &mut recv).await {
        Ok(s) => s,
        Err(reason) => {
            tracing::info!(%remote, %transport, %reason, "tunnel refused");
            // Give the refusal a moment to reach the agent before closing.
            let _ = send.finish().await;
            let _ = timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(&reason);
            return None;
        }
    };
    Some((session, send, ControlReader::spawn(recv)))
}

/// Runs the handshake; on refusal, the refusal has been sent and the reason is returned.
async fn handshake(
    state: &SharedState,
    conn: &TunnelConnection,
    send: &mut SendHalf,
    recv: &mut RecvHalf,
) -> Result<Arc<AgentSession>, String> {
    let payload = match timeout(
        state.config.handshake_timeout,
        read_payload("hello", recv, FrameLimit::CONTROL),
    )
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(format!("bad hello: {e}")),
        Err(_) => return Err("no hello in time".into()),
    };
    let version = peek_version(&payload).map_err(|e| format!("bad hello: {e}"))?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        let message = version_mismatch_message(version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION);
        return refuse(send, RefusalCode::VersionMismatch, message).await;
    }
    let hello: Hello = decode_payload("hello", &payload).map_err(|e| format!("bad hello: {e}"))?;

    let checked = match state
        .store
        .verify_proven(&hello.credential, state.store.prove().await)
        .await
    {
        Ok(checked) => checked,
        // A database on the network that cannot be read: the agent retries
        // (on SQLite, as always, the token counts as unknown).
        Err(e) if state.store.is_remote() => {
            tracing::error!(error = %e, "token lookup failed");
            let message = "the relay cannot reach its database";
            return refuse(send, RefusalCode::Unavailable, message).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            Err(TokenRejection::Unknown)
        }
    };
    let record = match checked {
        Ok(r) => r,
        Err(rejection) => {
            let code = match rejection {
                TokenRejection::Unknown => RefusalCode::InvalidCredential,
                TokenRejection::Revoked => RefusalCode::CredentialRevoked,
                TokenRejection::Expired => RefusalCode::CredentialExpired,
            };
            return refuse(send, code, format!("agent token refused: {rejection}")).await;
        }
    };
    if record.kind != TokenKind::Agent {
        return refuse(
            send,
            RefusalCode::WrongCredentialKind,
            format!(
                "token {} is a {} token; agents need an agent token (relay token create --owner {})",
                record.id, record.kind, record.owner
            ),
        )
        .await;
    }
    if state.shutdown.is_cancelled() {
        return refuse(send, RefusalCode::Unavailable, "the relay is shutting down").await;
    }
    if hello.routes.is_empty() {
        return refuse(send, RefusalCode::NoRoutes, "the agent offered no routes").await;
    }
    let mut names = Vec::new();
    let mut served = HashMap::new();
    for offer in &hello.routes {
        if let Err(e) = protocol::validate_route_name(&offer.name) {
            return refuse(send, RefusalCode::InvalidRoute, e.to_string()).await;
        }
        if served.contains_key(&offer.name) {
            return refuse(
                send,
                RefusalCode::InvalidRoute,
                format!("route '{}' is offered twice", offer.name),
            )
            .await;
        }
        let policy = match state
            .policies
            .for_route(&offer.name, offer.policy.as_deref())
        {
            Ok(e) => e,
            Err(e) => {
                return refuse(
                    send,
                    RefusalCode::InvalidPolicy,
                    format!("the policy of route '{}' was refused: {e}", offer.name),
                )
                .await;
            }
        };
        names.push(offer.name.clone());
        served.insert(
            offer.name.clone(),
            ServedRoute {
                kind: offer.kind,
                policy,
                accept_tool_changes: offer.accept_tool_changes,
            },
        );
    }
    for name in &names {
        let max = state.config.max_routes_per_owner;
        match state
            .store
            .claim_route_capped(name, &record.owner, max)
            .await
        {
            Ok(RouteClaim::Granted) => {}
            Ok(RouteClaim::TooMany { max }) => {
                // RouteTaken: agents before this cap know the code (a new
                // one would not decode); the message says what happened.
                return refuse(
                    send,
                    RefusalCode::RouteTaken,
                    format!(
                        "route '{name}' is new, but {} already holds {max} routes on this relay, the most one owner may claim (relay serve --max-routes-per-owner); reuse one of them, or ask the relay's operator to release one (relay route release)",
                        record.owner
                    ),
                )
                .await;
            }
            Ok(RouteClaim::Taken { .. }) => {
                return refuse(
                    send,
                    RefusalCode::RouteTaken,
                    format!(
                        "route '{name}' belongs to another owner on this relay; choose another --route"
                    ),
                )
                .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "route claim failed");
                return refuse(
                    send,
                    RefusalCode::Unavailable,
                    "the relay's state store failed",
                )
                .await;
            }
        }
    }

    let session = Arc::new(AgentSession::new(
        state.registry.next_session_id(),
        record.owner.clone(),
        record.id.clone(),
        hello.instance_id,
        version,
        served,
        conn.clone(),
    ));
    let welcome = HelloReply::Welcome(Welcome {
        version,
        relay_version: env!("CARGO_PKG_VERSION").to_owned(),
        owner: record.owner.clone(),
        session_id: session.id,
        routes: names
            .iter()
            .map(|n| AcceptedRoute {
                name: n.clone(),
                public_url: state.route_url(n),
            })
            .collect(),
        keepalive_interval_ms: state.config.keepalive_interval.as_millis() as u32,
    });
    protocol::write_frame("welcome", send, &welcome, FrameLimit::CONTROL)
        .await
        .map_err(|e| format!("cannot send welcome: {e}"))?;
    for old in state.registry.register(session.clone()) {
        tracing::info!(
            old = old.id,
            new = session.id,
            "agent reconnected; ending its stale session"
        );
        old.kill(KillReason::Replaced);
    }
    Ok(session)
}

async fn refuse(
    send: &mut SendHalf,
    code: RefusalCode,
    message: impl Into<String>,
) -> Result<Arc<AgentSession>, String> {
    let refusal = Refusal::new(code, message);
    let reason = format!("{:?}: {}", refusal.code, refusal.message);
    let _ = protocol::write_frame(
        "refusal",
        send,
        &HelloReply::Refused(refusal),
        FrameLimit::CONTROL,
    )
    .await;
    Err(reason)
}

/// Agents open only the control stream; anything else is reset at once so
/// that it cannot hold buffers in the relay.
/// Reads control messages until the connection ends; returns why it ended.
async fn control_loop(
    state: &SharedState,
    session: &Arc<AgentSession>,
    send: &mut SendHalf,
    mut control: ControlReader,
) -> &'static str {
    let mut deadline = Instant::now() + silence_limit(state);
    let mut said_goodbye = false;
    // Set once the agent has finished its control stream: it is draining, and
    // gets `drain_timeout` (not the keep-alive limit) to finish.
    let mut control_open = true;
    // Set once the agent (or the relay) began draining this session.
    let mut draining = false;
    // A node of a cluster tells agents that decode it the live nodes, now
    // and whenever they change.
    let mut nodes = state
        .cluster
        .as_ref()
        .filter(|_| session.protocol_version >= NODES_VERSION)
        .map(|node| {
            let mut live = node.live();
            live.mark_changed();
            (&node.agent_address, live)
        });
    loop {
        tokio::select! {
            changed = async {
                match nodes.as_mut() {
                    Some((_, live)) => live.changed().await,
                    None => std::future::pending().await,
                }
            }, if nodes.is_some() && !draining => {
                let Some((this, live)) = nodes.as_mut() else { continue };
                if changed.is_err() {
                    nodes = None;
                    continue;
                }
                let addresses = live.borrow_and_update().clone();
                if addresses.is_empty() {
                    continue;
                }
                let message = Control::Nodes { this: (*this).clone(), addresses };
                if protocol::write_frame("control", send, &message, FrameLimit::CONTROL).await.is_err() {
                    session.conn.close("control stream failed");
                    return "control stream write failed";
                }
            }
            frame = control.next(), if control_open => {
                if !draining {
                    deadline = Instant::now() + silence_limit(state);
                }
                match frame {
                    Ok(Control::Ping { nonce }) => {
                        if protocol::write_frame("control", send, &Control::Pong { nonce }, FrameLimit::CONTROL).await.is_err() {
                            session.conn.close("control stream failed");
                            return "control stream write failed";
                        }
                    }
                    Ok(Control::Pong { .. }) => {}
                    Ok(Control::Nodes { .. }) => {
                        tracing::warn!(session = session.id, "agent sent a relay's control message; closing its tunnel");
                        session.conn.close("protocol violation");
                        return "protocol violation";
                    }
                    Ok(Control::GoAway { reason, .. }) => {
                        tracing::info!(session = session.id, ?reason, "agent is leaving; draining");
                        state.registry.unregister(session);
                        session.set_draining();
                        // A draining agent may stop pinging while it finishes
                        // in-flight exchanges: give it the drain period.
                        draining = true;
                        deadline = Instant::now() + state.config.drain_timeout;
                    }
                    Err(protocol::FrameError::Closed { .. }) => {
                        // The agent finished its control stream: no new
                        // exchanges; in-flight ones get the drain period.
                        control_open = false;
                        state.registry.unregister(session);
                        session.set_draining();
                        if !draining {
                            draining = true;
                            deadline = Instant::now() + state.config.drain_timeout;
                        }
                    }
                    Err(protocol::FrameError::Io(e)) => {
                        tracing::debug!(session = session.id, error = %e, "control stream failed");
                        session.conn.close("control stream failed");
                        return "control stream failed";
                    }
                    Err(e) => {
                        tracing::warn!(session = session.id, error = %e, "agent sent a bad control frame; closing its tunnel");
                        session.conn.close("protocol violation");
                        return "protocol violation";
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if !draining {
                    tracing::warn!(session = session.id, "agent silent for {:?}; closing its tunnel", silence_limit(state));
                    session.conn.close("keep-alive timeout");
                    return "keep-alive timeout";
                }
                session.conn.close("drained");
                return "agent finished";
            }
            _ = session.kill.notified() => {
                let (reason, message) = match session.kill_reason() {
                    Some(KillReason::Replaced) => (GoAwayReason::Replaced, "replaced by a newer session of the same agent"),
                    _ => (GoAwayReason::CredentialRevoked, "the agent token was revoked or has expired"),
                };
                let reconnect = reason == GoAwayReason::Replaced;
                let _ = protocol::write_frame("control", send, &Control::GoAway { reason, reconnect, message: message.into() }, FrameLimit::CONTROL).await;
                state.registry.unregister(session);
                if reason == GoAwayReason::CredentialRevoked {
                    let _ = tokio::time::timeout(Duration::from_secs(1), session.conn.closed()).await;
                    session.conn.close("credential revoked");
                    return "credential revoked";
                }
                // A replaced session finishes its in-flight exchanges and ends
                // when the agent closes it, or when the drain period is over.
                draining = true;
                deadline = Instant::now() + state.config.drain_timeout;
            }
            _ = state.shutdown.cancelled(), if !said_goodbye => {
                said_goodbye = true;
                session.set_draining();
                let _ = protocol::write_frame("control", send, &Control::GoAway {
                    reason: GoAwayReason::Shutdown,
                    reconnect: true,
                    message: "the relay is restarting".into(),
                }, FrameLimit::CONTROL).await;
            }
            // The agent opens no stream but its control stream: any other
            // is reset (here, not in a task of its own per agent). Accepting
            // fails once the connection is closed, on either transport: that
            // is also how the loop learns of the end (one future fewer per
            // idle agent than a `closed()` beside it).
            extra = session.conn.accept_bi() => match extra {
                Ok(stream) => {
                    tracing::warn!(session = session.id, "agent opened an unexpected stream; resetting it");
                    drop(stream);
                }
                Err(_) => return "connection closed",
            },
        }
    }
}

/// How long an agent may stay silent (computed where used rather than kept:
/// every idle agent's task would hold it).
fn silence_limit(state: &SharedState) -> Duration {
    state.config.keepalive_interval * 3
}

/// Ends sessions whose agent token was revoked or expired, whatever process
/// did it (the store's change feed names the token, within a second).
pub async fn revocation_watch(state: SharedState) {
    let mut feed = state.store.changes();
    // Expiry needs no write to happen, so every session is checked at
    // least every 30 intervals.
    let mut ticker = tokio::time::interval(state.config.revocation_check_interval * 30);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The tokens to check again; `None`: every session's.
        let only: Option<HashSet<String>> = tokio::select! {
            _ = ticker.tick() => None,
            change = feed.next() => {
                let Some(first) = change else { return };
                let (mut tokens, mut all) = (HashSet::new(), false);
                let mut next = Some(first);
                while let Some(change) = next {
                    match change {
                        Change::Token { id } => {
                            tokens.insert(id);
                        }
                        Change::Reset => all = true,
                        _ => {}
                    }
                    next = feed.try_next();
                }
                if all {
                    None
                } else if tokens.is_empty() {
                    continue;
                } else {
                    Some(tokens)
                }
            }
            _ = state.shutdown.cancelled() => return,
        };
        let now = crate::store::now();
        for session in state.registry.sessions() {
            if only
                .as_ref()
                .is_some_and(|t| !t.contains(&session.token_id))
            {
                continue;
            }
            let valid = match state.store.token(&session.token_id).await {
                Ok(Some(record)) => record.check(now).is_ok(),
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(error = %e, "cannot re-check agent tokens");
                    true
                }
            };
            if !valid {
                tracing::info!(session = session.id, token = %session.token_id, "agent token revoked or expired; disconnecting the agent");
                session.kill(KillReason::CredentialRevoked);
            }
        }
    }
}
