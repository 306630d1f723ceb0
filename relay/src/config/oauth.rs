//! What the authorization server is told: how it treats URL client ids
//! (client ID metadata documents), and the upstream identity providers it
//! signs people in with, their secrets and GitHub's endpoints.

use std::path::PathBuf;

/// GitHub's web endpoints.
pub const BASE_URL: &str = "https://github.com";
/// GitHub's REST API.
pub const API_URL: &str = "https://api.github.com";

/// How the relay treats URL client ids.
#[derive(Debug, Clone)]
pub struct CimdConfig {
    /// Accept client metadata documents at all.
    pub enabled: bool,
    /// If not empty, documents are fetched only from these domains and
    /// their subdomains.
    pub allow_domains: Vec<String>,
    /// DEVELOPMENT: documents may be served from loopback addresses.
    pub allow_loopback: bool,
    /// DEVELOPMENT: a CA trusted for fetching documents, besides the web PKI.
    pub extra_ca: Option<PathBuf>,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            enabled: true,
            allow_domains: Vec::new(),
            allow_loopback: false,
            extra_ca: None,
        }
    }
}

/// A secret from the command line, the environment or the config file:
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The upstream providers configured, as the flags (`relay serve
/// --oidc-*`) and the config file's `[oauth]` keys say.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret: Option<Secret>,
    pub oidc_groups_claim: String,
    pub oidc_name: Option<String>,
    pub github_client_id: Option<String>,
    pub github_client_secret: Option<Secret>,
    /// GitHub's web and API endpoints (hidden flags, for tests).
    pub github_base_url: String,
    pub github_api_url: String,
    /// DEVELOPMENT ONLY: providers may be reached over plain http on a
    /// loopback address.
    pub dev_allow_http_loopback: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_groups_claim: "groups".into(),
            oidc_name: None,
            github_client_id: None,
            github_client_secret: None,
            github_base_url: BASE_URL.into(),
            github_api_url: API_URL.into(),
            dev_allow_http_loopback: false,
        }
    }
}
