//! `agent connect`: dial, say hello, serve, and come back after every loss.

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
use crate::tunnel::session::{self, Identity, Serving, SessionConfig, SessionEnd};
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
    let config = SessionConfig {
        drain_timeout: opts.drain_timeout,
        quic_retry: (opts.transport == TransportChoice::Auto).then_some(opts.quic_retry_interval),
    };
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
                    d = dialer.dial(opts.transport) => d,
                    _ = stop.cancelled() => return Ok(()),
                };
                match dialed {
                    Ok(c) => c,
                    Err(e) => {
                        let delay = backoff.next_delay();
                        reporter.reconnecting(
                            &format!("cannot reach the relay at {}: {e}", opts.relay),
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
        let established = match session::handshake(conn.clone(), &identity).await {
            Ok(e) => e,
            Err(SessionEnd::Refused(r)) if !r.code.is_retryable() => {
                conn.close("refused");
                return Err(refusal_error(r));
            }
            Err(end) => {
                conn.close("handshake failed");
                let delay = backoff.next_delay();
                reporter.reconnecting(&describe(&end), delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        };
        backoff.reset();
        tracing::info!(
            relay = %opts.relay,
            %transport,
            session = established.welcome.session_id,
            owner = %established.welcome.owner,
            "tunnel established"
        );
        for r in &established.welcome.routes {
            reporter.live(&r.name, &r.public_url, transport);
        }
        let end = session::serve(
            established,
            serving.clone(),
            stop.clone(),
            &config,
            Some(&dialer),
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
                reporter.reconnecting(&reason, delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    }
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
