//! State shared by every part of a running relay.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::registry::Registry;
use crate::audit::Audit;
use crate::config::RelayConfig;
use crate::http::origin::AllowedOrigins;
use crate::policies::Policies;
use crate::sessions::legacy::LegacySessions;
use crate::store::Store;

/// Shared by the HTTPS front, the tunnel listener and the background tasks.
pub struct RelayState {
    pub config: RelayConfig,
    /// `https://host[:port]`, without a trailing slash.
    pub public_url: String,
    pub store: Store,
    pub audit: Audit,
    pub registry: Registry,
    /// Cancelled when the relay begins shutting down.
    pub shutdown: CancellationToken,
    /// In-flight client requests (drained on shutdown).
    pub requests: TaskTracker,
    /// Per-message policy.
    pub policies: Policies,
    /// Browser origins that may call routes.
    pub origins: AllowedOrigins,
    /// Open streams of the legacy HTTP+SSE transport.
    pub legacy: LegacySessions,
    /// Which replica holds each MCP session.
    pub affinity: crate::sessions::affinity::Affinity,
    /// The authorization server's in-memory parts (rate limits).
    pub oauth: crate::oauth::OAuthState,
    /// Per-route and per-identity request rate limits.
    pub limits: crate::limits::rate::RequestLimits,
    /// Per-IP connection and QUIC handshake bounds.
    pub conn_limits: crate::limits::connections::ConnLimits,
    /// Prometheus metrics (served by the admin listener).
    pub metrics: crate::metrics::Metrics,
    /// The certificate every TLS handshake gets (swapped on reload).
    pub certs: Arc<crate::tls::resolver::CertResolver>,
}

impl RelayState {
    /// The public URL of a route.
    pub fn route_url(&self, route: &str) -> String {
        format!("{}/mcp/{route}", self.public_url)
    }

    /// The OAuth issuer: the public URL, exactly (one string everywhere).
    pub fn issuer(&self) -> &str {
        &self.public_url
    }
}

pub type SharedState = Arc<RelayState>;
