//! A STAND-IN for GitHub (github.com cannot be reached from the tests): a
//! small HTTP server on 127.0.0.1:0 with exactly the endpoints the relay's
//! GitHub sign-in uses, and checks of what it receives.
//!
//! * `GET /login/oauth/authorize` — the person approves at once: a code for
//!   the configured user, sent back to `redirect_uri` with `state`. The PKCE
//!   challenge (S256 required) is remembered with the code.
//! * `POST /login/oauth/access_token` — the client id and secret must be the
//!   app's, the code known and unused, `redirect_uri` the one of the
//!   authorization, and SHA-256 of `code_verifier` the challenge. Like
//!   GitHub, a refusal is `200` with `{"error": …}`.
//! * `GET /user/emails`, `/user/orgs`, `/user/teams` — with the issued
//!   token only.
//!
//! It is not GitHub: only the shapes of the answers the relay reads are
//! those of GitHub's documented REST API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

/// The GitHub user who signs in.
#[derive(Debug, Clone)]
pub struct GitHubUser {
    /// The answer of `GET /user/emails`.
    pub emails: Value,
    /// The answer of `GET /user/orgs`.
    pub orgs: Value,
    /// The answer of `GET /user/teams`.
    pub teams: Value,
}

struct Grant {
    redirect_uri: String,
    challenge: String,
    used: bool,
}

#[derive(Default)]
struct Inner {
    user: Option<GitHubUser>,
    codes: HashMap<String, Grant>,
    tokens: Vec<String>,
    /// What the stand-in refused, for the test to show.
    refusals: Vec<String>,
    next: u64,
}

/// The running stand-in; stops when dropped.
pub struct GitHubStandIn {
    pub addr: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHubStandIn {
    pub async fn start(client_id: &str, client_secret: &str) -> GitHubStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in GitHub");
        let addr = listener.local_addr().expect("address");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (id, secret) = (client_id.to_owned(), client_secret.to_owned());
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (inner, id, secret) = (shared.clone(), id.clone(), secret.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (inner, id, secret) = (inner.clone(), id.clone(), secret.clone());
                        async move { Ok::<_, Infallible>(serve(&inner, &id, &secret, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        GitHubStandIn {
            addr,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            inner,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: both its web and its API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The user who signs in next.
    pub fn set_user(&self, user: GitHubUser) {
        self.inner.lock().expect("lock").user = Some(user);
    }

    /// What it refused so far.
    pub fn refusals(&self) -> Vec<String> {
        self.inner.lock().expect("lock").refusals.clone()
    }
}

fn answer(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A refusal, GitHub's way: 200 with an error object.
fn refuse(s: &mut Inner, why: &str) -> Response<Full<Bytes>> {
    s.refusals.push(why.to_owned());
    answer(
        StatusCode::OK,
        json!({"error": "bad_verification_code", "error_description": why}),
    )
}

fn params(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

async fn serve(
    inner: &Mutex<Inner>,
    client_id: &str,
    client_secret: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = params(req.uri().query().unwrap_or("").as_bytes());
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = inner.lock().expect("lock");
    let s = &mut *s;
    match (method.as_str(), path.as_str()) {
        ("GET", "/login/oauth/authorize") => {
            let q = |k: &str| query.get(k).cloned().unwrap_or_default();
            if q("client_id") != client_id || q("code_challenge_method") != "S256" {
                return refuse(s, "authorize: wrong client_id or no S256 challenge");
            }
            s.next += 1;
            let code = format!("code{}", s.next);
            s.codes.insert(
                code.clone(),
                Grant {
                    redirect_uri: q("redirect_uri"),
                    challenge: q("code_challenge"),
                    used: false,
                },
            );
            let mut to = url::Url::parse(&q("redirect_uri")).expect("redirect_uri");
            to.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &q("state"));
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_str(to.as_str()).expect("location"),
            );
            r
        }
        ("POST", "/login/oauth/access_token") => {
            let f = params(&body);
            let g = |k: &str| f.get(k).cloned().unwrap_or_default();
            if g("client_id") != client_id || g("client_secret") != client_secret {
                return refuse(s, "token: wrong client id or secret");
            }
            let code = g("code");
            let verifier = g("code_verifier");
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()),
            );
            let ok = match s.codes.get_mut(&code) {
                Some(grant) if !grant.used => {
                    grant.used = true;
                    grant.redirect_uri == g("redirect_uri") && grant.challenge == challenge
                }
                _ => false,
            };
            if !ok {
                return refuse(
                    s,
                    "token: unknown or used code, other redirect_uri, or wrong PKCE verifier",
                );
            }
            s.next += 1;
            let token = format!("gho_standin{}", s.next);
            s.tokens.push(token.clone());
            answer(
                StatusCode::OK,
                json!({"access_token": token, "token_type": "bearer", "scope": "read:org,user:email"}),
            )
        }
        ("GET", "/user/emails" | "/user/orgs" | "/user/teams") => {
            if !bearer.is_some_and(|b| s.tokens.contains(&b)) {
                s.refusals.push(format!("{path}: no valid token"));
                return answer(
                    StatusCode::UNAUTHORIZED,
                    json!({"message": "Bad credentials"}),
                );
            }
            let Some(user) = s.user.clone() else {
                return answer(StatusCode::NOT_FOUND, json!({"message": "no user"}));
            };
            answer(
                StatusCode::OK,
                match path.as_str() {
                    "/user/emails" => user.emails,
                    "/user/orgs" => user.orgs,
                    _ => user.teams,
                },
            )
        }
        _ => answer(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}
