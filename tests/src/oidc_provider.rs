//! A real OpenID Connect provider on loopback: the PyPI package
//! `oidc-provider-mock` (tests/requirements.txt), run from the tests' venv on
//! a free port. Its users and their claims (email, email_verified, groups)
//! are set through its HTTP API (`PUT /users/<sub>`), and a person "signs
//! in" by posting their subject to its authorization form.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::procs::Proc;

/// A running provider; killed on drop.
pub struct OidcProvider {
    pub proc: Proc,
    /// Its issuer, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

/// An answer over plain HTTP.
pub struct PlainAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl OidcProvider {
    /// Starts the provider on 127.0.0.1:0 and waits until it listens.
    pub async fn start() -> OidcProvider {
        let python = crate::python::python();
        let proc = Proc::spawn(
            "oidc-provider",
            &python,
            &[
                "-m".into(),
                "oidc_provider_mock".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                "0".into(),
            ],
            &[("NO_COLOR", "1")],
        );
        const READY: &str = "Uvicorn running on http://";
        assert!(
            proc.wait_stderr(READY, Duration::from_secs(60)).await,
            "oidc-provider-mock did not start:\n{}",
            proc.stderr_text()
        );
        let text = proc.stderr_text();
        let line = text
            .lines()
            .find(|l| l.contains(READY))
            .expect("the line just seen");
        let start = line.find(READY).expect("marker") + READY.len();
        let addr: String = line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        OidcProvider {
            proc,
            issuer: format!("http://{addr}"),
        }
    }

    /// Sets the claims of the user `sub`.
    pub async fn set_user(&self, sub: &str, claims: serde_json::Value) {
        let a = plain(
            "PUT",
            &format!("{}/users/{sub}", self.issuer),
            "application/json",
            claims.to_string(),
        )
        .await;
        assert_eq!(a.status, 204, "PUT /users/{sub}: {}", a.body);
    }

    /// The person `sub` approves the authorization request at `authorize_url`
    /// (the provider's form): where the provider sends the browser back.
    pub async fn sign_in(&self, authorize_url: &str, sub: &str) -> String {
        assert!(
            authorize_url.starts_with(&self.issuer),
            "the relay sent the browser to {authorize_url}, not to {}",
            self.issuer
        );
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("sub", sub)
            .finish();
        let a = plain(
            "POST",
            authorize_url,
            "application/x-www-form-urlencoded",
            form,
        )
        .await;
        assert_eq!(a.status, 302, "the provider's form: {}", a.body);
        a.location.expect("the provider's redirect")
    }
}

/// One request over plain HTTP (the provider is not behind TLS).
pub async fn plain(method: &str, url: &str, content_type: &str, body: String) -> PlainAnswer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no answer within 30 s"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    PlainAnswer {
        status,
        location,
        body,
    }
}
