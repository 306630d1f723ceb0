//! Sign-in through an upstream identity provider (an OpenID Connect
//! provider, [`super::upstream_oidc`], or GitHub, [`super::github`]), next
//! to or instead of local accounts.
//!
//! The sign-in page links to `GET /oauth/upstream/<provider>` with the
//! session's CSRF token and the authorization request being answered. The
//! relay remembers, for a few minutes and in the store (so that the answer
//! may reach any node of a cluster: [`::store::SignIns`]), a pending sign-in
//! under a random `state`: the browser session it belongs to, the PKCE
//! verifier, the `nonce` and the request; then sends the browser to the
//! provider. The provider sends it back to `GET /oauth/callback/<provider>`,
//! where the pending sign-in is taken (once, on any node), checked to belong
//! to the same browser session, and the code is exchanged. The person's verified email signs
//! the session in (a new session id); the provider's groups are recorded
//! for that email (the store's `Users::groups`) and reach policy and audit.
//! Then the usual path goes on: consent, code.
//!
//! Pending sign-ins are bounded so that no one client can fill the table
//! and lock everyone else out: starts are rate-limited per address
//! ([`START_BURST`], then one every [`START_REFILL`]; an IPv6 /64 is one
//! address; per node), one address may have at most
//! [`MAX_PENDING_PER_ADDRESS`] pending, and one browser session
//! [`MAX_PENDING_PER_SESSION`] (its oldest is dropped for a new one); these
//! two and [`MAX_PENDING`] are counted in the store, over every node. Past
//! the address's bounds: 429 with `Retry-After`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ::store::{PendingSignIn, Remembered, SignInBounds, StoreError};

pub use crate::config::oauth::{Secret, UpstreamConfig};
use crate::limits::ratelimit::RateLimiter;

use super::github::{GitHub, GitHubConfig};
use super::upstream_http::UpstreamHttp;
use super::upstream_oidc::{Oidc, OidcConfig};

/// How long a pending sign-in waits for the provider's answer.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Most sign-ins pending at once; beyond, new ones are refused.
const MAX_PENDING: usize = 10_000;
/// Most sign-ins one client address may have pending.
pub const MAX_PENDING_PER_ADDRESS: usize = 30;
/// Most sign-ins one browser session may have pending; a new one replaces
/// the oldest.
pub const MAX_PENDING_PER_SESSION: usize = 3;
/// Sign-ins one address may start at once...
pub const START_BURST: f64 = 10.0;
/// ... then one per this long.
pub const START_REFILL: Duration = Duration::from_secs(6);

impl UpstreamConfig {
    /// The OpenID Connect provider, if one is configured.
    pub fn oidc(&self) -> Result<Option<OidcConfig>, crate::RelayError> {
        match (&self.oidc_issuer, &self.oidc_client_id) {
            (None, None) => Ok(None),
            (Some(issuer), Some(client_id)) => Ok(Some(OidcConfig {
                issuer: issuer.clone(),
                client_id: client_id.clone(),
                client_secret: self.oidc_client_secret.clone(),
                groups_claim: self.oidc_groups_claim.clone(),
                name: self.oidc_name.clone(),
            })),
            _ => Err(crate::RelayError::Config(
                "--oidc-issuer and --oidc-client-id go together".into(),
            )),
        }
    }

    /// The GitHub OAuth app, if one is configured.
    pub fn github(&self) -> Result<Option<GitHubConfig>, crate::RelayError> {
        match (&self.github_client_id, &self.github_client_secret) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => Ok(Some(GitHubConfig {
                client_id: id.clone(),
                client_secret: secret.clone(),
                base_url: self.github_base_url.clone(),
                api_url: self.github_api_url.clone(),
            })),
            _ => Err(crate::RelayError::Config(
                "--github-client-id and --github-client-secret go together".into(),
            )),
        }
    }
}

/// Who signed in at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The verified email, lowercased.
    pub email: String,
    /// The provider's groups, sorted, without duplicates, within the
    /// tunnel's bounds ([`protocol::bounded_groups`]: the agent decides on
    /// the same groups as the relay).
    pub groups: Vec<String>,
}

impl UpstreamIdentity {
    pub fn new(email: &str, mut groups: Vec<String>) -> UpstreamIdentity {
        groups.retain(|g| !g.is_empty());
        groups.sort();
        groups.dedup();
        let bounded = protocol::bounded_groups(groups.iter().cloned());
        if bounded.len() < groups.len() {
            tracing::warn!(
                email,
                given = groups.len(),
                kept = bounded.len(),
                max = protocol::MAX_GROUPS,
                max_len = protocol::MAX_GROUP_LEN,
                "the provider gave more or longer groups than the tunnel carries; \
                 the others are ignored"
            );
        }
        UpstreamIdentity {
            email: email.to_lowercase(),
            groups: bounded,
        }
    }
}

/// Why an upstream sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Config(String),
    #[error("OpenID Connect discovery of {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("{0}")]
    Identity(String),
    #[error("the provider has not verified the email address {0}")]
    Unverified(String),
}

/// Which provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Oidc,
    GitHub,
}

impl ProviderKind {
    /// Its name in paths (`/oauth/upstream/<slug>`, `/oauth/callback/<slug>`).
    pub fn slug(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
            ProviderKind::GitHub => "github",
        }
    }

    pub fn from_slug(slug: &str) -> Option<ProviderKind> {
        match slug {
            "oidc" => Some(ProviderKind::Oidc),
            "github" => Some(ProviderKind::GitHub),
            _ => None,
        }
    }
}

/// A sign-in sent to the provider, waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) provider: ProviderKind,
    /// SHA-256 of the id of the browser session that started it.
    pub(crate) session_hash: Vec<u8>,
    /// The client address that started it ([`crate::limits::ip_key`]).
    pub(crate) address: IpAddr,
    pub(crate) verifier: String,
    pub(crate) nonce: String,
    /// Where the signed-in browser goes back to.
    pub(crate) back: Back,
    /// When it started, in Unix milliseconds.
    pub(crate) started_ms: i64,
}

impl Pending {
    fn to_record(&self) -> PendingSignIn {
        PendingSignIn {
            provider: self.provider.slug().to_owned(),
            session_hash: self.session_hash.clone(),
            address: self.address.to_string(),
            verifier: self.verifier.clone(),
            nonce: self.nonce.clone(),
            back: match &self.back {
                Back::Authorize(request) => format!("authorize:{request}"),
                Back::Device(user_code) => format!("device:{user_code}"),
            },
            started_ms: self.started_ms,
        }
    }

    fn from_record(r: PendingSignIn) -> Result<Pending, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("pending sign-in: {what}"));
        let back = match r.back.split_once(':') {
            Some(("authorize", request)) => Back::Authorize(request.to_owned()),
            Some(("device", user_code)) => Back::Device(user_code.to_owned()),
            _ => return Err(corrupt("where back")),
        };
        Ok(Pending {
            provider: ProviderKind::from_slug(&r.provider).ok_or_else(|| corrupt("provider"))?,
            session_hash: r.session_hash,
            address: r.address.parse().map_err(|_| corrupt("address"))?,
            verifier: r.verifier,
            nonce: r.nonce,
            back,
            started_ms: r.started_ms,
        })
    }
}

/// What a sign-in at the provider was started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Back {
    /// An authorization request (its query string): `/oauth/authorize`.
    Authorize(String),
    /// The approval of an `agent login` (the code typed, maybe none):
    /// `/device`.
    Device(String),
}

impl Back {
    pub(crate) fn url(&self) -> String {
        match self {
            Back::Authorize(request) => format!("/oauth/authorize?{request}"),
            Back::Device(user_code) => format!(
                "/device?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("user_code", user_code)
                    .finish()
            ),
        }
    }
}

/// The providers, discovered, and the limit of sign-in starts (the pending
/// sign-ins are in the store).
pub struct Upstream {
    pub(crate) http: UpstreamHttp,
    pub(crate) oidc: Option<Oidc>,
    pub(crate) github: Option<GitHub>,
    /// Sign-ins started per client address.
    starts: RateLimiter,
}

/// Why a sign-in is not started.
#[derive(Debug)]
pub(crate) enum NotStarted {
    /// This address started or has too many: 429.
    Address {
        message: &'static str,
        retry_after: Duration,
    },
    /// The table is full: 503.
    Full,
    /// The store failed.
    Store(StoreError),
}

/// A link on the sign-in page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderLink {
    pub href: String,
    pub label: String,
}

impl Upstream {
    /// Discovers the configured providers (the relay does not start if one
    /// cannot be discovered). `public_url` is the relay's: the callbacks are
    /// `<public_url>/oauth/callback/<provider>`.
    pub async fn start(
        config: &UpstreamConfig,
        public_url: &str,
    ) -> Result<Upstream, crate::RelayError> {
        let http = UpstreamHttp::new(config.dev_allow_http_loopback)?;
        let oidc = match config.oidc()? {
            Some(c) => {
                let oidc = Oidc::discover(c, &http, &callback_url(public_url, ProviderKind::Oidc))
                    .await
                    .map_err(|e| crate::RelayError::Config(e.to_string()))?;
                tracing::info!(issuer = oidc.issuer(), "OpenID Connect provider discovered");
                Some(oidc)
            }
            None => None,
        };
        let github = match config.github()? {
            Some(c) => Some(
                GitHub::new(&c, &http, &callback_url(public_url, ProviderKind::GitHub))
                    .map_err(|e| crate::RelayError::Config(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Upstream {
            http,
            oidc,
            github,
            starts: start_limiter(),
        })
    }

    /// No provider.
    pub fn none() -> Result<Upstream, crate::RelayError> {
        Ok(Upstream {
            http: UpstreamHttp::new(false)?,
            oidc: None,
            github: None,
            starts: start_limiter(),
        })
    }

    /// Whether any provider is configured.
    pub fn any(&self) -> bool {
        self.oidc.is_some() || self.github.is_some()
    }

    /// The sign-in page's links for the session's CSRF token and the request.
    pub fn links(&self, csrf: &str, request: &str) -> Vec<ProviderLink> {
        self.links_with(&form_query(csrf, request))
    }

    /// The `/device` sign-in page's links: back there with the typed code
    /// after the provider.
    pub fn device_links(&self, csrf: &str, user_code: &str) -> Vec<ProviderLink> {
        self.links_with(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("csrf", csrf)
                .append_pair("device", user_code)
                .finish(),
        )
    }

    fn links_with(&self, query: &str) -> Vec<ProviderLink> {
        let mut links = Vec::new();
        if let Some(o) = &self.oidc {
            links.push(ProviderLink {
                href: format!("/oauth/upstream/{}?{query}", ProviderKind::Oidc.slug()),
                label: format!("Sign in with {}", o.name()),
            });
        }
        if self.github.is_some() {
            links.push(ProviderLink {
                href: format!("/oauth/upstream/{}?{query}", ProviderKind::GitHub.slug()),
                label: "Sign in with GitHub".into(),
            });
        }
        links
    }

    /// Counts a start from `peer` against its address's rate.
    pub(crate) fn admit(&self, peer: IpAddr, now: Instant) -> Result<(), NotStarted> {
        self.starts
            .check(peer, now)
            .map_err(|retry_after| NotStarted::Address {
                message: "too many sign-ins started from your network; try again later",
                retry_after,
            })
    }

    /// Keeps a pending sign-in under `state`, within the bounds.
    pub(crate) async fn remember(
        &self,
        store: &dyn ::store::Store,
        state: &str,
        p: &Pending,
    ) -> Result<(), NotStarted> {
        match store
            .remember_sign_in(state, &p.to_record(), bounds())
            .await
        {
            Ok(Remembered::Kept) => Ok(()),
            Ok(Remembered::AddressFull { oldest_ms }) => Err(NotStarted::Address {
                message: "too many sign-ins under way from your network; \
                          finish one or try again later",
                retry_after: Duration::from_millis(
                    u64::try_from(oldest_ms + ttl_ms() - p.started_ms).unwrap_or(0),
                ),
            }),
            Ok(Remembered::Full) => Err(NotStarted::Full),
            Err(e) => Err(NotStarted::Store(e)),
        }
    }

    /// Takes the pending sign-in under `state` (once, on any node), if it
    /// has not expired.
    pub(crate) async fn take(
        &self,
        store: &dyn ::store::Store,
        state: &str,
    ) -> Result<Option<Pending>, StoreError> {
        store
            .take_sign_in(state, ::store::now_ms(), ttl_ms())
            .await?
            .map(Pending::from_record)
            .transpose()
    }
}

fn ttl_ms() -> i64 {
    PENDING_TTL.as_millis() as i64
}

fn bounds() -> SignInBounds {
    SignInBounds {
        ttl_ms: ttl_ms(),
        per_session: MAX_PENDING_PER_SESSION,
        per_address: MAX_PENDING_PER_ADDRESS,
        total: MAX_PENDING,
    }
}

fn start_limiter() -> RateLimiter {
    RateLimiter::new(START_BURST, 1.0 / START_REFILL.as_secs_f64())
}

/// `<public_url>/oauth/callback/<provider>`: the redirect URI to register
/// at the provider.
pub fn callback_url(public_url: &str, provider: ProviderKind) -> String {
    format!(
        "{}/oauth/callback/{}",
        public_url.trim_end_matches('/'),
        provider.slug()
    )
}

fn form_query(csrf: &str, request: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .append_pair("request", request)
        .finish()
}

/// What a provider's token endpoint said, without the code or secrets.
pub(super) fn token_error<RE: std::error::Error + 'static>(
    e: &oauth2::RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => match r.error_description() {
            Some(d) => format!("{}: {d}", r.error()),
            None => r.error().to_string(),
        },
        oauth2::RequestTokenError::Request(e) => e.to_string(),
        oauth2::RequestTokenError::Parse(e, _) => format!("unreadable answer: {e}"),
        oauth2::RequestTokenError::Other(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = UpstreamConfig {
            oidc_issuer: Some("https://idp".into()),
            oidc_client_id: Some("relay".into()),
            oidc_client_secret: Some(Secret::new("hunter2-very-secret")),
            ..Default::default()
        };
        let shown = format!("{c:?} {:?}", c.oidc().expect("valid"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("relay"), "{shown}");
        let half = UpstreamConfig {
            oidc_issuer: Some("https://idp".into()),
            ..Default::default()
        };
        assert!(half.oidc().is_err());
    }

    fn pending(session: &str, address: &str, started_ms: i64) -> Pending {
        Pending {
            provider: ProviderKind::Oidc,
            session_hash: ::store::token::hash(session),
            address: crate::limits::ip_key::of(address.parse().expect("ip")),
            verifier: "v".into(),
            nonce: "n".into(),
            back: Back::Device("BCDF-GHJK".into()),
            started_ms,
        }
    }

    #[tokio::test]
    async fn one_client_cannot_fill_the_pending_sign_ins() {
        let dir =
            std::env::temp_dir().join(format!("dbr-upstream-{}", ::store::token::random_hex(6)));
        let store = ::store::sqlite::SqliteStore::open(&dir).expect("store");
        let u = Upstream::none().expect("upstream");
        let t0 = ::store::now_ms();
        // One session keeps its newest few.
        for i in 0..10 {
            u.remember(
                &store,
                &format!("s{i}"),
                &pending("browser", "192.0.2.1", t0 + i),
            )
            .await
            .expect("remembered");
        }
        assert!(
            u.take(&store, "s0").await.expect("take").is_none(),
            "the oldest was dropped"
        );
        let newest = u.take(&store, "s9").await.expect("take");
        assert_eq!(
            newest,
            Some(pending("browser", "192.0.2.1", t0 + 9)),
            "the newest is kept"
        );
        // One address, a fresh session each time: bounded, then 429.
        let mut refused = None;
        for i in 0..100 {
            let ip = format!("2001:db8::{i:x}");
            let p = pending(&format!("s{i}"), &ip, t0 + 1000);
            if let Err(e) = u.remember(&store, &format!("a{i}"), &p).await {
                refused = Some((i, e));
                break;
            }
        }
        let (after, e) = refused.expect("refused");
        assert_eq!(after, MAX_PENDING_PER_ADDRESS);
        match e {
            NotStarted::Address { retry_after, .. } => {
                assert_eq!(retry_after, PENDING_TTL)
            }
            other => panic!("{other:?}"),
        }
        // Another address still starts one; the first one can again once
        // its pending sign-ins expire.
        let at = t0 + 1000;
        assert!(u
            .remember(&store, "b", &pending("other", "2001:db8:1::1", at))
            .await
            .is_ok());
        let later = at + ttl_ms();
        assert!(u
            .remember(&store, "c", &pending("s-late", "2001:db8::1", later))
            .await
            .is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn starts_are_rate_limited_per_address() {
        let u = Upstream::none().expect("upstream");
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..START_BURST as u32 {
            assert!(u.admit(a, t0).is_ok());
        }
        assert!(matches!(u.admit(a, t0), Err(NotStarted::Address { .. })));
        assert!(u.admit("192.0.2.2".parse().expect("ip"), t0).is_ok());
        assert!(u.admit(a, t0 + START_REFILL).is_ok());
    }

    #[test]
    fn identities_are_normalised() {
        let id = UpstreamIdentity::new(
            "Alice@Example.COM",
            vec!["ops".into(), "".into(), "data".into(), "ops".into()],
        );
        assert_eq!(id.email, "alice@example.com");
        assert_eq!(id.groups, vec!["data".to_owned(), "ops".to_owned()]);
        assert_eq!(
            callback_url("https://r.example/", ProviderKind::Oidc),
            "https://r.example/oauth/callback/oidc"
        );
    }
}
