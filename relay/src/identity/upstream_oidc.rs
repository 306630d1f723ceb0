//! Sign-in through an upstream OpenID Connect provider: discovery at
//! startup, the authorization code flow with PKCE (S256), `state` and
//! `nonce`, the code exchanged with the `oauth2` crate, and the person's
//! email and groups taken from the ID token (or the userinfo endpoint).
//!
//! The ID token's signature is not checked. OpenID Connect Core 1.0
//! §3.1.3.7 (item 6) allows a client to rely on TLS server validation
//! instead, when the ID token is received directly from the token endpoint
//! over TLS, as here: the relay sends the code (with its client secret and
//! PKCE verifier) to the token endpoint named by the discovery document and
//! reads the ID token from that answer, never from the browser. The other
//! checks of §3.1.3.7 are made: `iss` is the issuer, `aud` contains the
//! client id (and `azp` is it when there are several audiences), `exp` is in
//! the future, and `nonce` is the one this sign-in sent.

use base64::Engine as _;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::upstream::{self, Secret, UpstreamError, UpstreamIdentity};
use super::upstream_http::UpstreamHttp;

/// `relay serve --oidc-*`.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// The claim that lists the person's groups.
    pub groups_claim: String,
    /// The provider's name on the sign-in button (default: the issuer's host).
    pub name: Option<String>,
}

/// The token endpoint's answer: OAuth's, plus the ID token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type OidcClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A discovered provider.
pub struct Oidc {
    config: OidcConfig,
    /// The issuer as the discovery document says it (checked against the
    /// configured one); ID tokens must carry exactly this `iss`.
    issuer: String,
    client: OidcClient,
    userinfo: Option<String>,
    name: String,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Reads the provider's discovery document (OpenID Connect Discovery
    /// 1.0 §4) and checks it.
    pub async fn discover(
        config: OidcConfig,
        http: &UpstreamHttp,
        redirect_uri: &str,
    ) -> Result<Oidc, UpstreamError> {
        let configured = config.issuer.trim_end_matches('/').to_owned();
        let bad = |reason: String| UpstreamError::Discovery {
            issuer: configured.clone(),
            reason,
        };
        let issuer_url = Url::parse(&configured).map_err(|e| bad(format!("not a URL: {e}")))?;
        http.check_url(&issuer_url)
            .map_err(|e| bad(e.to_string()))?;
        let doc = http
            .get_json(
                &format!("{configured}/.well-known/openid-configuration"),
                None,
            )
            .await
            .map_err(|e| bad(e.to_string()))?;
        let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_owned);
        let issuer = field("issuer").ok_or_else(|| bad("the document has no issuer".into()))?;
        if issuer.trim_end_matches('/') != configured {
            return Err(bad(format!(
                "the document names the issuer {issuer:?}, not the one configured (§4.3)"
            )));
        }
        let endpoint = |name: &str| -> Result<Url, UpstreamError> {
            let text = field(name).ok_or_else(|| bad(format!("the document has no {name}")))?;
            let url = Url::parse(&text).map_err(|e| bad(format!("{name}: {e}")))?;
            http.check_url(&url).map_err(|e| bad(e.to_string()))?;
            Ok(url)
        };
        let auth = endpoint("authorization_endpoint")?;
        let token = endpoint("token_endpoint")?;
        let userinfo = match field("userinfo_endpoint") {
            Some(_) => Some(endpoint("userinfo_endpoint")?.to_string()),
            None => None,
        };
        let mut client = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(auth))
            .set_token_uri(TokenUrl::from_url(token))
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.to_owned())
                    .map_err(|e| bad(format!("redirect URI {redirect_uri}: {e}")))?,
            );
        if let Some(secret) = &config.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
        }
        let name = config
            .name
            .clone()
            .or_else(|| issuer_url.host_str().map(str::to_owned))
            .unwrap_or_else(|| configured.clone());
        Ok(Oidc {
            config,
            issuer,
            client,
            userinfo,
            name,
        })
    }

    /// The name on the sign-in button.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the browser is sent: the provider's authorization endpoint
    /// with the code request, its PKCE challenge, `state` and `nonce`.
    pub fn authorize_url(&self, state: &str, nonce: &str, challenge: PkceCodeChallenge) -> Url {
        let state = state.to_owned();
        let (url, _) = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_extra_param("nonce", nonce)
            .set_pkce_challenge(challenge)
            .url();
        url
    }

    /// Exchanges the code and tells who signed in.
    pub async fn identify(
        &self,
        http: &UpstreamHttp,
        code: &str,
        verifier: PkceCodeVerifier,
        nonce: &str,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(verifier)
            .request_async(http)
            .await
            .map_err(|e| UpstreamError::Exchange(upstream::token_error(&e)))?;
        let id_token = token.extra_fields().id_token.as_deref().ok_or_else(|| {
            UpstreamError::Identity("the token endpoint answered without an id_token".into())
        })?;
        let mut claims = check_id_token(
            id_token,
            &self.issuer,
            &self.config.client_id,
            nonce,
            crate::store::now(),
        )?;
        // Providers that keep the ID token small (no email, no groups) have
        // them at the userinfo endpoint (§5.3); its `sub` must be the ID
        // token's (§5.3.2).
        let missing = !claims.contains_key("email")
            || !claims.contains_key(self.config.groups_claim.as_str());
        if let (true, Some(userinfo)) = (missing, &self.userinfo) {
            let info = http
                .get_json(userinfo, Some(token.access_token().secret()))
                .await
                .map_err(|e| UpstreamError::Identity(format!("userinfo: {e}")))?;
            let Value::Object(info) = info else {
                return Err(UpstreamError::Identity(
                    "userinfo: not a JSON object".into(),
                ));
            };
            if info.get("sub") != claims.get("sub") {
                return Err(UpstreamError::Identity(
                    "userinfo: its sub is not the ID token's".into(),
                ));
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        identity_from_claims(&claims, &self.config.groups_claim)
    }
}

/// The checks of OpenID Connect Core §3.1.3.7 but the signature's (see the
/// module's doc): the ID token's claims.
pub fn check_id_token(
    id_token: &str,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<Map<String, Value>, UpstreamError> {
    let bad = |reason: &str| UpstreamError::Identity(format!("ID token: {reason}"));
    let mut parts = id_token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a JWS compact serialization"));
    };
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("payload is not base64url"))?;
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else {
        return Err(bad("payload is not a JSON object"));
    };
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(bad("iss is not the issuer"));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(bad("aud does not contain this relay's client id"));
    }
    if audiences.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(client_id) {
        return Err(bad(
            "several audiences, and azp is not this relay's client id",
        ));
    }
    match claims.get("exp").and_then(Value::as_i64) {
        // A minute of leeway for clocks that differ.
        Some(exp) if exp + 60 > now => {}
        Some(_) => return Err(bad("expired")),
        None => return Err(bad("no exp")),
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(bad("nonce is not the one this sign-in sent"));
    }
    if claims.get("sub").and_then(Value::as_str).is_none() {
        return Err(bad("no sub"));
    }
    Ok(claims)
}

/// The person in verified claims: a verified email (required), and the
/// groups `groups_claim` lists (a list of strings, or one string).
pub fn identity_from_claims(
    claims: &Map<String, Value>,
    groups_claim: &str,
) -> Result<UpstreamIdentity, UpstreamError> {
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|e| e.contains('@'))
        .ok_or_else(|| {
            UpstreamError::Identity(
                "the provider gave no email address (is the email scope allowed?)".into(),
            )
        })?;
    // Some providers send the boolean as a string.
    let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("true");
    if !verified {
        return Err(UpstreamError::Unverified(email.to_owned()));
    }
    let groups = match claims.get(groups_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(g)) => vec![g.clone()],
        _ => Vec::new(),
    };
    Ok(UpstreamIdentity::new(email, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg": "RS256"})),
            b64(&claims)
        )
    }

    fn good() -> Value {
        serde_json::json!({"iss": "https://idp", "aud": "relay", "exp": 2000, "nonce": "n1",
            "sub": "u1", "email": "a@x.org", "email_verified": true, "groups": ["data", "ops"]})
    }

    #[test]
    fn an_id_token_is_checked_before_its_claims_are_used() {
        let ok = check_id_token(&jwt(good()), "https://idp", "relay", "n1", 1000).expect("ok");
        let id = identity_from_claims(&ok, "groups").expect("identity");
        assert_eq!(id.email, "a@x.org");
        assert_eq!(id.groups, vec!["data".to_owned(), "ops".to_owned()]);
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut c = good();
            edit(&mut c);
            check_id_token(&jwt(c), "https://idp", "relay", "n1", 1000).is_err()
        };
        assert!(refused(&|c| c["iss"] = "https://evil".into()));
        assert!(refused(&|c| c["aud"] = "other".into()));
        assert!(refused(
            &|c| c["aud"] = serde_json::json!(["relay", "other"])
        ));
        assert!(!refused(&|c| {
            c["aud"] = serde_json::json!(["relay", "other"]);
            c["azp"] = "relay".into();
        }));
        assert!(refused(&|c| c["exp"] = 100.into()));
        assert!(refused(&|c| c["nonce"] = "replayed".into()));
        assert!(refused(&|c| {
            c.as_object_mut().expect("object").remove("nonce");
        }));
        assert!(check_id_token("a.b", "https://idp", "relay", "n1", 1000).is_err());
    }

    #[test]
    fn only_a_verified_email_signs_in() {
        let mut c = good();
        c["email_verified"] = false.into();
        let Value::Object(m) = c else { panic!() };
        assert!(matches!(
            identity_from_claims(&m, "groups"),
            Err(UpstreamError::Unverified(_))
        ));
        let mut m2 = m.clone();
        m2.remove("email_verified");
        assert!(identity_from_claims(&m2, "groups").is_err());
        let mut m3 = m.clone();
        m3.insert("email_verified".into(), "true".into());
        m3.insert("roles".into(), "admin".into());
        let id = identity_from_claims(&m3, "roles").expect("string true");
        assert_eq!(id.groups, vec!["admin".to_owned()]);
    }
}
