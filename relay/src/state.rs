//! State shared by every part of a running relay.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::registry::Registry;
use crate::audit::Audit;
use crate::config::RelayConfig;
use crate::http::origin::AllowedOrigins;
use crate::identity::{cimd, password_checks, upstream};
use crate::limits::{ratelimit, sign_in_throttle};
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
    pub oauth: OAuthState,
    /// Per-route and per-identity request rate limits.
    pub limits: crate::limits::rate::RequestLimits,
    /// Per-IP connection and QUIC handshake bounds.
    pub conn_limits: crate::limits::connections::ConnLimits,
    /// Prometheus metrics (served by the admin listener).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The certificate every TLS handshake gets (swapped on reload).
    pub certs: Arc<crate::tls::resolver::CertResolver>,
    /// This relay as a node of a cluster (`None`: alone).
    pub cluster: Option<Arc<crate::cluster::node::Node>>,
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

/// The authorization server's in-memory state.
pub struct OAuthState {
    /// Dynamic client registrations per client IP.
    pub registrations: ratelimit::RateLimiter,
    /// Client metadata documents: the fetcher and its cache.
    pub cimd: cimd::Cimd,
    /// Device authorizations (`agent login`) per client IP.
    pub device_requests: ratelimit::RateLimiter,
    /// Wrong user codes entered at /device per client IP.
    pub device_guesses: ratelimit::RateLimiter,
    /// Upstream identity providers (OpenID Connect) and their pending
    /// sign-ins.
    pub upstream: upstream::Upstream,
    /// Password tries per client address and per account.
    pub sign_in_throttle: sign_in_throttle::SignInThrottle,
    /// The few password checks that may run at once.
    pub password_checks: password_checks::PasswordChecks,
}

impl OAuthState {
    pub fn new(
        cimd: cimd::CimdConfig,
        upstream: upstream::Upstream,
    ) -> Result<Self, crate::RelayError> {
        Ok(OAuthState {
            // A burst of 10, then one every 6 s: generous for clients that
            // register on every connect, useless for filling the table.
            registrations: ratelimit::RateLimiter::new(10.0, 1.0 / 6.0),
            cimd: cimd::Cimd::new(cimd)?,
            device_requests: ratelimit::RateLimiter::new(10.0, 1.0 / 6.0),
            // Guessing one of the pending codes among 20^8 takes forever at
            // one every 6 s.
            device_guesses: ratelimit::RateLimiter::new(10.0, 1.0 / 6.0),
            upstream,
            sign_in_throttle: sign_in_throttle::SignInThrottle::default(),
            password_checks: password_checks::PasswordChecks::default(),
        })
    }
}
