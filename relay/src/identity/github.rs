//! Sign-in with GitHub (an OAuth app, not OpenID Connect): the code flow
//! with `state` and PKCE (S256) against GitHub's OAuth endpoints, the code
//! exchanged with the `oauth2` crate; then, with the user's token, GitHub's
//! REST API says who signed in:
//!
//! * the email is the primary, verified address of `GET /user/emails`;
//! * the groups are the logins of the user's organisations
//!   (`GET /user/orgs`) and their teams as `org/team-slug`
//!   (`GET /user/teams`).
//!
//! The scopes asked are `user:email` and `read:org`. The endpoints are
//! `https://github.com` and `https://api.github.com`; hidden development
//! flags point them elsewhere (the e2e tests' stand-in GitHub).

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde_json::Value;
use url::Url;

use super::upstream::{self, Secret, UpstreamError, UpstreamIdentity};
use super::upstream_http::UpstreamHttp;

/// `relay serve --github-*`.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub base_url: String,
    pub api_url: String,
}

type GitHubClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The configured GitHub OAuth app.
pub struct GitHub {
    client: GitHubClient,
    api_url: String,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("client_id", &self.client.client_id().as_str())
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    pub fn new(
        config: &GitHubConfig,
        http: &UpstreamHttp,
        redirect_uri: &str,
    ) -> Result<GitHub, UpstreamError> {
        let bad = |reason: String| UpstreamError::Config(format!("GitHub: {reason}"));
        let base = config.base_url.trim_end_matches('/');
        let api = config.api_url.trim_end_matches('/');
        for u in [base, api] {
            let url = Url::parse(u).map_err(|e| bad(format!("{u}: {e}")))?;
            http.check_url(&url).map_err(|e| bad(e.to_string()))?;
        }
        let auth = AuthUrl::new(format!("{base}/login/oauth/authorize"))
            .map_err(|e| bad(e.to_string()))?;
        let token = TokenUrl::new(format!("{base}/login/oauth/access_token"))
            .map_err(|e| bad(e.to_string()))?;
        let client = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(config.client_secret.expose().to_owned()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            // GitHub reads the client's credentials from the form.
            .set_auth_type(AuthType::RequestBody)
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| bad(e.to_string()))?,
            );
        Ok(GitHub {
            client,
            api_url: api.to_owned(),
        })
    }

    /// Where the browser is sent.
    pub fn authorize_url(&self, state: &str, challenge: PkceCodeChallenge) -> Url {
        let state = state.to_owned();
        let (url, _) = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("user:email".into()))
            .add_scope(Scope::new("read:org".into()))
            .set_pkce_challenge(challenge)
            .url();
        url
    }

    /// Exchanges the code and asks GitHub who signed in.
    pub async fn identify(
        &self,
        http: &UpstreamHttp,
        code: &str,
        verifier: PkceCodeVerifier,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(verifier)
            .request_async(http)
            .await
            .map_err(|e| UpstreamError::Exchange(upstream::token_error(&e)))?;
        let bearer = token.access_token().secret();
        let get = |path: &str| {
            let url = format!("{}{path}", self.api_url);
            async move {
                http.get_json(&url, Some(bearer))
                    .await
                    .map_err(|e| UpstreamError::Identity(format!("GitHub API: {e}")))
            }
        };
        let emails = get("/user/emails?per_page=100").await?;
        let email = primary_verified_email(&emails)?;
        let orgs = get("/user/orgs?per_page=100").await?;
        let teams = get("/user/teams?per_page=100").await?;
        Ok(UpstreamIdentity::new(&email, groups(&orgs, &teams)))
    }
}

/// The primary address of `GET /user/emails`, if GitHub verified it.
pub fn primary_verified_email(emails: &Value) -> Result<String, UpstreamError> {
    let primary = emails
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["primary"] == Value::Bool(true))
        .ok_or_else(|| UpstreamError::Identity("GitHub lists no primary email address".into()))?;
    let email = primary["email"]
        .as_str()
        .ok_or_else(|| UpstreamError::Identity("GitHub's primary email has no address".into()))?;
    if primary["verified"] != Value::Bool(true) {
        return Err(UpstreamError::Unverified(email.to_owned()));
    }
    Ok(email.to_owned())
}

/// Organisation logins, and teams as `org/team-slug`.
pub fn groups(orgs: &Value, teams: &Value) -> Vec<String> {
    let orgs = orgs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["login"].as_str().map(str::to_owned));
    let teams = teams.as_array().into_iter().flatten().filter_map(|t| {
        Some(format!(
            "{}/{}",
            t["organization"]["login"].as_str()?,
            t["slug"].as_str()?
        ))
    });
    orgs.chain(teams).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_primary_verified_email_and_orgs_and_teams() {
        let emails = json!([
            {"email": "old@x.org", "primary": false, "verified": true},
            {"email": "a@x.org", "primary": true, "verified": true}
        ]);
        assert_eq!(primary_verified_email(&emails).expect("email"), "a@x.org");
        let unverified = json!([{"email": "a@x.org", "primary": true, "verified": false}]);
        assert!(matches!(
            primary_verified_email(&unverified),
            Err(UpstreamError::Unverified(_))
        ));
        assert!(primary_verified_email(&json!([])).is_err());
        let g = groups(
            &json!([{"login": "acme"}]),
            &json!([{"slug": "data", "organization": {"login": "acme"}}]),
        );
        assert_eq!(g, vec!["acme".to_owned(), "acme/data".to_owned()]);
    }
}
