//! HTTPS calls to a relay's own endpoints (not its routes): the device grant
//! of `agent login` and the grants API of `agent share`. The relay is trusted
//! like the tunnel trusts it: the web PKI, plus `--ca-cert` for a relay with
//! a self-signed certificate.

use std::path::Path;
use std::time::Duration;

use crate::error::AgentError;

/// The longest a call to the relay may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A relay's HTTP API.
pub struct RelayApi {
    http: reqwest::Client,
    /// `https://host[:port]`, no trailing slash.
    base: String,
}

/// An answer: its status and its JSON body (`Null` if it had none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    /// A string field of the body.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.body.get(name).and_then(|v| v.as_str())
    }

    /// What went wrong, for a person: the relay's message (OAuth's
    /// `error_description`, or the gateway's `message`) and its code.
    pub fn problem(&self) -> String {
        let code = self.field("error").unwrap_or("error");
        let text = self
            .field("error_description")
            .or_else(|| self.field("message"))
            .unwrap_or("(no message)");
        format!("{text} ({code}, HTTP {})", self.status)
    }
}

impl RelayApi {
    pub fn new(relay: &url::Url, ca_cert: Option<&Path>) -> Result<RelayApi, AgentError> {
        if relay.scheme() != "https" {
            return Err(AgentError::RelayUrl {
                url: relay.to_string(),
                reason: "the relay is reached over https".into(),
            });
        }
        let tls = tunnel::tls::client_config(ca_cert, &[b"http/1.1"])?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(TIMEOUT)
            // The relay's API answers; it never redirects an agent.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AgentError::Api(format!("cannot build an HTTPS client: {e}")))?;
        Ok(RelayApi {
            http,
            base: relay.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// POSTs a form (`application/x-www-form-urlencoded`).
    pub async fn post_form(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Result<Answer, AgentError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        self.send(req, path).await
    }

    /// A call with the agent credential, and a JSON body if any.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, AgentError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(req, path).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, path: &str) -> Result<Answer, AgentError> {
        let resp = req.send().await.map_err(|e| {
            AgentError::Api(format!("cannot reach {}{path}: {}", self.base, chain(&e)))
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| {
            AgentError::Api(format!("{}{path}: the answer was cut off: {e}", self.base))
        })?;
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| {
                AgentError::Api(format!(
                    "{}{path} answered HTTP {status} with something that is not JSON; is this a Drawbridge relay?",
                    self.base
                ))
            })?
        };
        Ok(Answer { status, body })
    }
}

/// An error with its causes (reqwest hides the interesting part in them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
