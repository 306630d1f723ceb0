//! Client ID metadata documents: the Python MCP SDK's OAuth client uses an
//! https URL as its client_id, the relay fetches the document there (served
//! by the test over https on loopback, with its own CA) and the flow ends in
//! a tool call through the tunnel. Then the SSRF guard and the document
//! checks: loopback and private addresses without the development flag, a
//! document naming another client_id, an oversized one, a redirect, and a
//! redirect URI the document does not list; each refused with a page (never
//! a redirect) at the authorization endpoint and `invalid_client` at the
//! token endpoint. Last, the fetch limits: concurrent authorizations that
//! need the same uncached document share one fetch, and one address may start
//! only so many fetches before it is refused with 429.

use e2e::client::{full_body, Answer};
use e2e::documents::{Doc, DocServer};
use e2e::{AgentProc, HttpsClient, RelayProc};

use e2e::browser::{add_user, encode};

const EMAIL: &str = "carol@example.com";
const PASSWORD: &str = "metadata documents rock";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn document(client_id: &str, redirect_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Drawbridge e2e (CIMD)",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

struct Setup {
    relay: RelayProc,
    http: HttpsClient,
    docs: DocServer,
}

impl Setup {
    /// A relay trusting the document server's CA; `dev`: loopback document
    /// hosts allowed.
    async fn new(dev: bool) -> Setup {
        let docs = DocServer::start().await;
        let ca = docs.ca().display().to_string();
        let mut args = vec!["--cimd-ca", ca.as_str()];
        if dev {
            args.push("--cimd-dev-allow-loopback");
        }
        let relay = RelayProc::start(&args).await;
        add_user(&relay, EMAIL, PASSWORD);
        let http = HttpsClient::new(&relay.ca(), false);
        Setup { relay, http, docs }
    }

    async fn authorize(&self, client_id: &str, redirect_uri: &str) -> Answer {
        let url = format!(
            "{}/oauth/authorize?{}",
            self.relay.url(),
            encode(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", &self.relay.route_url("db")),
                ("state", "xyz"),
            ])
        );
        self.http.get(&url, None).await
    }

    async fn token(&self, client_id: &str) -> Answer {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("{}/oauth/token", self.relay.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full_body(encode(&[
                ("grant_type", "authorization_code"),
                ("code", "dbac_nothing"),
                (
                    "code_verifier",
                    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                ),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id),
            ])))
            .expect("request");
        self.http.fetch(req).await
    }

    /// The authorization endpoint shows an error page (no redirect)
    /// containing `reason`, and the token endpoint answers invalid_client.
    async fn refused(&self, client_id: &str, redirect_uri: &str, reason: &str) {
        let a = self.authorize(client_id, redirect_uri).await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert!(a.headers.get("location").is_none(), "{:?}", a.headers);
        let page = a.text().replace("&quot;", "\"").replace("&#39;", "'");
        assert!(page.contains(reason), "{reason:?} not in {page}");
        let t = self.token(client_id).await;
        assert_eq!(t.status, 401, "{}", t.text());
        assert_eq!(t.json()["error"], "invalid_client", "{}", t.text());
        let d = t.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(d.contains(reason), "{reason:?} not in {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_signs_in_with_a_client_metadata_document() {
    let s = Setup::new(true).await;
    let client_id = s.docs.url("/oauth/client.json");
    s.docs.put(
        "/oauth/client.json",
        Doc::json(&document(&client_id, REDIRECT)),
    );
    let meta = s
        .http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", s.relay.url()),
            None,
        )
        .await;
    assert_eq!(
        meta.json()["client_id_metadata_document_supported"],
        true,
        "{}",
        meta.text()
    );
    let dir = e2e::TempDir::new("cimd");
    let db = dir.path().join("demo.db").display().to_string();
    let _agent = AgentProc::start_upstream(
        &s.relay,
        &s.relay.token(EMAIL, false),
        "db",
        &["--sqlite", &db],
        "auto",
    )
    .await;
    let v = e2e::python::run_json(
        "oauth_client.py",
        &[
            s.relay.route_url("db").into(),
            s.relay.ca().into(),
            EMAIL.into(),
            PASSWORD.into(),
            client_id.clone().into(),
        ],
    )
    .await;
    assert_eq!(v["client_id"], client_id.as_str(), "{v}");
    assert_eq!(v["pages"], serde_json::json!(["login", "consent"]), "{v}");
    assert_eq!(v["read"]["is_error"], false, "{v}");
    assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
    assert!(v["access_token"]
        .as_str()
        .expect("token")
        .starts_with("dboa_"));
    // Fetched once, then served from the cache (authorize, login, consent
    // and token all needed the client).
    assert_eq!(s.docs.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_on_loopback_or_private_addresses_are_refused() {
    let s = Setup::new(false).await;
    let client_id = s.docs.url("/client.json");
    s.docs
        .put("/client.json", Doc::json(&document(&client_id, REDIRECT)));
    s.refused(
        &client_id,
        REDIRECT,
        "resolves to 127.0.0.1, a loopback address; the relay fetches documents only from public addresses",
    )
    .await;
    let by_name = format!("https://localhost:{}/client.json", s.docs.addr.port());
    s.refused(&by_name, REDIRECT, "a loopback address").await;
    s.refused(
        "https://10.0.0.1/client.json",
        REDIRECT,
        "resolves to 10.0.0.1, a private address",
    )
    .await;
    s.refused(
        "https://[::ffff:a9fe:a9fe]/latest/meta-data",
        REDIRECT,
        "a link-local address",
    )
    .await;
    s.refused(
        &client_id.replace("https:", "http:"),
        REDIRECT,
        "client metadata documents must be served over https",
    )
    .await;
    // The guard decides before connecting.
    assert_eq!(s.docs.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_checked_before_use() {
    let s = Setup::new(true).await;

    let mismatch = s.docs.url("/mismatch.json");
    s.docs.put(
        "/mismatch.json",
        Doc::json(&document(&s.docs.url("/other.json"), REDIRECT)),
    );
    s.refused(
        &mismatch,
        REDIRECT,
        &format!(
            "its client_id \"{}\" is not the URL it was fetched from",
            s.docs.url("/other.json")
        ),
    )
    .await;

    let big = s.docs.url("/big.json");
    let mut doc = document(&big, REDIRECT);
    doc["padding"] = "x".repeat(6000).into();
    s.docs.put("/big.json", Doc::json(&doc));
    s.refused(&big, REDIRECT, "it is larger than 5120 bytes")
        .await;

    let moved = s.docs.url("/moved.json");
    s.docs.put(
        "/moved.json",
        Doc {
            status: 302,
            headers: vec![("location".into(), s.docs.url("/mismatch.json"))],
            body: String::new(),
        },
    );
    s.refused(&moved, REDIRECT, "the relay does not follow redirects")
        .await;

    // A valid document, but the request's redirect URI is not in it: a
    // page, never a redirect to the unlisted URI.
    let good = s.docs.url("/good.json");
    s.docs
        .put("/good.json", Doc::json(&document(&good, REDIRECT)));
    let a = s
        .authorize(&good, "https://attacker.example/callback")
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.headers.get("location").is_none(), "{:?}", a.headers);
    assert!(a.text().contains("Invalid redirect URI"), "{}", a.text());
    // The listed one leads to the sign-in page.
    let a = s.authorize(&good, REDIRECT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("Drawbridge e2e (CIMD)"), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cimd_off_url_client_ids_are_unknown() {
    let docs = DocServer::start().await;
    let relay = RelayProc::start(&["--cimd", "off"]).await;
    let http = HttpsClient::new(&relay.ca(), false);
    let meta = http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", relay.url()),
            None,
        )
        .await;
    assert_eq!(meta.json()["client_id_metadata_document_supported"], false);
    let client_id = docs.url("/client.json");
    let a = http
        .get(
            &format!(
                "{}/oauth/authorize?{}",
                relay.url(),
                encode(&[
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", REDIRECT)
                ])
            ),
            None,
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("Unknown application"), "{}", a.text());
    assert_eq!(docs.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_authorizations_share_one_fetch() {
    let s = Setup::new(true).await;
    let client_id = s.docs.url("/slow.json");
    s.docs
        .put("/slow.json", Doc::json(&document(&client_id, REDIRECT)));
    // Slow enough that every request arrives while the first fetch is on.
    s.docs.set_delay(std::time::Duration::from_millis(1500));
    const N: usize = 8;
    let answers =
        futures::future::join_all((0..N).map(|_| s.authorize(&client_id, REDIRECT))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.text().contains("Drawbridge e2e (CIMD)"), "{}", a.text());
    }
    assert_eq!(s.docs.hits(), 1, "{N} concurrent authorizations, one fetch");

    // A document that cannot be used is shared too, and not cached: the
    // next request fetches again.
    let broken = s.docs.url("/broken.json");
    s.docs.put(
        "/broken.json",
        Doc::json(&document(&s.docs.url("/other.json"), REDIRECT)),
    );
    let answers = futures::future::join_all((0..N).map(|_| s.authorize(&broken, REDIRECT))).await;
    for a in &answers {
        assert_eq!(a.status, 400, "{}", a.text());
        assert!(
            a.text().contains("is not the URL it was fetched from"),
            "{}",
            a.text()
        );
    }
    assert_eq!(s.docs.hits(), 2);
    s.docs.set_delay(std::time::Duration::ZERO);
    assert_eq!(s.authorize(&broken, REDIRECT).await.status, 400);
    assert_eq!(s.docs.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_fetches_are_limited_per_caller() {
    let s = Setup::new(true).await;
    let good = s.docs.url("/good.json");
    s.docs
        .put("/good.json", Doc::json(&document(&good, REDIRECT)));
    assert_eq!(s.authorize(&good, REDIRECT).await.status, 200);
    // Nine more fetches (of documents that do not exist) fill the burst…
    for i in 0..9 {
        let a = s
            .authorize(&s.docs.url(&format!("/missing-{i}.json")), REDIRECT)
            .await;
        assert_eq!(a.status, 400, "{i}: {}", a.text());
    }
    assert_eq!(s.docs.hits(), 10);
    // …and the eleventh is refused without fetching.
    let a = s.authorize(&s.docs.url("/missing-10.json"), REDIRECT).await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert!(a.headers.get("location").is_none(), "{:?}", a.headers);
    let retry: u64 = a.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=6).contains(&retry), "{retry}");
    assert!(
        a.text()
            .contains("too many client metadata documents were fetched for your address"),
        "{}",
        a.text()
    );
    let t = s.token(&s.docs.url("/missing-11.json")).await;
    assert_eq!(t.status, 429, "{}", t.text());
    assert_eq!(t.json()["error"], "temporarily_unavailable", "{}", t.text());
    assert_eq!(s.docs.hits(), 10);
    // A cached document costs nothing.
    let a = s.authorize(&good, REDIRECT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(s.docs.hits(), 10);
}
