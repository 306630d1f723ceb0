//! `agent connect`: dial, say hello, serve, and come back after every loss.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::RefusalCode;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::AgentError;
use crate::gate::{Gate, OwnerPolicy};
use crate::report::Reporter;
use crate::tunnel::dial::{Dialer, TransportChoice};
use crate::tunnel::session::{self, Identity, NodeList, Serving, SessionConfig, SessionEnd};
use crate::upstream::Upstream;

/// Everything `agent connect` needs once the CLI is parsed.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `https://host[:port]` of the relay.
    pub relay: url::Url,
    pub token: String,
    pub ca_cert: Option<PathBuf>,
    pub route: String,
    /// What serves the route ([`Upstream::http`] or [`Upstream::sqlite`]).
    pub upstream: Arc<Upstream>,
    pub transport: TransportChoice,
    pub drain_timeout: Duration,
    /// How often a TCP tunnel in auto mode tries QUIC again.
    pub quic_retry_interval: Duration,
    /// The route owner's policy: sent to the relay, and applied again here.
    pub policy: OwnerPolicy,
    /// The local server is not an MCP server (`--plain-http`).
    pub plain_http: bool,
    /// The largest JSON-RPC body the agent reads to decide it.
    pub max_body: usize,
    /// The owner approves tools whose definitions changed since the relay
    /// pinned them (`--accept-tool-changes`).
    pub accept_tool_changes: bool,
    /// `--inspect`: the live view of the exchanges (`None`: off).
    pub inspector: Option<Arc<crate::inspector::Inspector>>,
    /// Sessions to hold at most, one per node of a relay that runs as a
    /// cluster (`--relay-connections`; 1: only the relay's public name).
    pub relay_connections: usize,
}

/// Runs until `stop` is cancelled (Ok) or the relay refuses us for good (Err).
pub async fn run(
    opts: ConnectOptions,
    stop: CancellationToken,
    reporter: Arc<dyn Reporter>,
) -> Result<(), AgentError> {
    protocol::validate_route_name(&opts.route)
        .map_err(|e| AgentError::Config(format!("--route: {e}")))?;
    let upstream = opts.upstream.clone();
    let mut dialer = Dialer::new(&opts.relay, opts.ca_cert.as_deref())?;
    dialer.quic_retry_interval = opts.quic_retry_interval;
    let kind = if opts.plain_http {
        protocol::UpstreamKind::PlainHttp
    } else {
        upstream.kind()
    };
    let identity = Identity {
        token: opts.token.clone(),
        instance_id: instance_id(),
        routes: vec![opts.route.clone()],
        kind,
        policy: opts.policy.text.clone(),
        accept_tool_changes: opts.accept_tool_changes,
    };
    let serving = Arc::new(Serving {
        gate: Gate::new(&opts.policy, kind, opts.max_body),
        upstream: upstream.clone(),
        reporter: reporter.clone(),
        inspector: opts.inspector.clone(),
    });
    let (nodes_tx, nodes_rx) = tokio::sync::watch::channel(None);
    let config = SessionConfig {
        drain_timeout: opts.drain_timeout,
        quic_retry: (opts.transport == TransportChoice::Auto).then_some(opts.quic_retry_interval),
        nodes: (opts.relay_connections > 1).then_some(nodes_tx),
    };
    let identity = Arc::new(identity);
    let dialer = Arc::new(dialer);
    // Sessions to the relay's other nodes (a cluster tells its agents its
    // nodes: protocol 6), each with its own back-off, until `stop`.
    let others = stop.child_token();
    let nodes = tokio::spawn(hold_nodes(
        opts.relay_connections.saturating_sub(1),
        Held {
            dialer: dialer.clone(),
            identity: identity.clone(),
            serving: serving.clone(),
            config: Arc::new(SessionConfig {
                drain_timeout: config.drain_timeout,
                quic_retry: config.quic_retry,
                nodes: None,
            }),
            transport: opts.transport,
            relay: opts.relay.to_string(),
            reporter: None,
        },
        nodes_rx,
        others.clone(),
    ));
    let primary = Held {
        dialer,
        identity,
        serving,
        config: Arc::new(config),
        transport: opts.transport,
        relay: opts.relay.to_string(),
        reporter: Some(reporter),
    };
    let result = hold(&primary, &stop).await;
    // Whatever ended the first session ends the others (they drained with
    // `stop`, or end now).
    others.cancel();
    let _ = nodes.await;
    result
}

/// What a session loop needs: whom to dial, what to say and what serves.
struct Held {
    dialer: Arc<Dialer>,
    identity: Arc<Identity>,
    serving: Arc<Serving>,
    config: Arc<SessionConfig>,
    transport: TransportChoice,
    /// The relay, for messages.
    relay: String,
    /// Who hears about the tunnel (`None`: a session to one more node of
    /// the relay, logged only).
    reporter: Option<Arc<dyn Reporter>>,
}

impl Held {
    fn reconnecting(&self, why: &str, delay: Duration) {
        match &self.reporter {
            Some(r) => r.reconnecting(why, delay),
            None => tracing::info!(node = %self.relay, why, ?delay, "reconnecting to a relay node"),
        }
    }
}

/// Dials, says hello, serves, and comes back after every loss (with
/// back-off) until `stop` (Ok) or a refusal for good (Err).
async fn hold(held: &Held, stop: &CancellationToken) -> Result<(), AgentError> {
    let Held {
        dialer,
        identity,
        serving,
        config,
        transport: choice,
        relay,
        reporter,
    } = held;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(15));
    let mut next_conn = None;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let conn = match next_conn.take() {
            Some(c) => c,
            None => {
                let dialed = tokio::select! {
                    d = dialer.dial(*choice) => d,
                    _ = stop.cancelled() => return Ok(()),
                };
                match dialed {
                    Ok(c) => c,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        held.reconnecting(
                            &format!("cannot reach the relay at {relay}: {e}"),
                            delay,
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => continue,
                            _ = stop.cancelled() => return Ok(()),
                        }
                    }
                }
            }
        };
        let transport = conn.transport();
        let established = match session::handshake(conn.clone(), identity).await {
            Ok(e) => e,
            Err(SessionEnd::Refused(r)) if !r.code.is_retryable() => {
                conn.close("refused");
                return Err(refusal_error(r));
            }
            Err(end) => {
                conn.close("handshake failed");
                let delay = backoff.next_delay();
                held.reconnecting(&describe(&end), delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        };
        backoff.reset();
        tracing::info!(
            relay = %relay,
            %transport,
            session = established.welcome.session_id,
            owner = %established.welcome.owner,
            "tunnel established"
        );
        if let Some(reporter) = reporter {
            for r in &established.welcome.routes {
                reporter.live(&r.name, &r.public_url, transport);
            }
        }
        let end = session::serve(
            established,
            serving.clone(),
            stop.clone(),
            config,
            Some(dialer),
        )
        .await;
        match end {
            SessionEnd::Stopped => return Ok(()),
            SessionEnd::Disconnected(msg) => return Err(AgentError::Disconnected(msg)),
            SessionEnd::Refused(r) => return Err(refusal_error(r)),
            SessionEnd::Upgrade(c) => next_conn = Some(c),
            SessionEnd::Lost(reason) => {
                // Right after a working session, come back quickly: a relay
                // restart should cost well under a second.
                let delay = backoff.next_delay();
                held.reconnecting(&reason, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    }
}

/// Holds one session to each of up to `extra` nodes of the relay besides
/// the one the first session is on, as the relay's list of its nodes says
/// (in its order), until `stop`: a node that leaves the list has its
/// session ended; one that joins it gets one.
async fn hold_nodes(
    extra: usize,
    template: Held,
    mut nodes: tokio::sync::watch::Receiver<Option<NodeList>>,
    stop: CancellationToken,
) {
    let mut held: HashMap<String, CancellationToken> = HashMap::new();
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let wanted: Vec<String> = match &*nodes.borrow_and_update() {
            Some(list) => list
                .addresses
                .iter()
                .filter(|a| **a != list.this)
                .take(extra)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        held.retain(|address, token| {
            let keep = wanted.contains(address);
            if !keep {
                tracing::info!(node = %address, "no longer a node of the relay (or another session is on it); leaving it");
                token.cancel();
            }
            keep
        });
        for address in wanted {
            if held.contains_key(&address) {
                continue;
            }
            let dialer = match template.dialer.for_node(&address) {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    tracing::warn!(node = %address, error = %e, "cannot dial this node of the relay");
                    continue;
                }
            };
            let token = stop.child_token();
            held.insert(address.clone(), token.clone());
            let node = Held {
                dialer,
                identity: template.identity.clone(),
                serving: template.serving.clone(),
                config: template.config.clone(),
                transport: template.transport,
                relay: address.clone(),
                reporter: None,
            };
            tasks.spawn(async move {
                tracing::info!(node = %address, "holding a session to this node of the relay too");
                if let Err(e) = hold(&node, &token).await {
                    tracing::warn!(node = %address, error = %e, "the session to this node of the relay ended");
                }
            });
        }
        tokio::select! {
            changed = nodes.changed() => if changed.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

fn refusal_error(mut r: protocol::Refusal) -> AgentError {
    if matches!(
        r.code,
        RefusalCode::InvalidCredential
            | RefusalCode::CredentialRevoked
            | RefusalCode::CredentialExpired
    ) {
        r.message
            .push_str(" (create a new one on the relay with `relay token create --owner EMAIL`)");
    }
    AgentError::Refused(r)
}

fn describe(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Refused(r) => r.message.clone(),
        SessionEnd::Disconnected(m) | SessionEnd::Lost(m) => m.clone(),
        SessionEnd::Stopped => "stopped".into(),
        SessionEnd::Upgrade(_) => "moving to QUIC".into(),
    }
}

fn instance_id() -> [u8; 16] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut id = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut id);
    id
}
