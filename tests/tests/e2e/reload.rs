//! Live reload (SIGHUP, `relay reload`): a new organisation policy and new
//! certificate files take effect while requests flow, a broken one is
//! refused with its file and line while the old one keeps running, and the
//! agent's tunnel is never disturbed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use http::Request;
use rustls_pki_types::ServerName;

const NO_ATTACH: &str = r#"@id("no-attach")
forbid (principal, action == Action::"call_tool", resource)
when { context.sql.kinds.contains("attach") };
"#;

const NO_READ_QUERY: &str = r#"@id("no-attach")
forbid (principal, action == Action::"call_tool", resource)
when { context.sql.kinds.contains("attach") };

@id("no-read-query")
forbid (principal, action == Action::"call_tool", resource)
when { resource.name == "read_query" };
"#;

/// A typo on line 3 (`emial`): the schema refuses it.
const BROKEN: &str = r#"@id("typo")
forbid (principal, action, resource)
when { principal.emial == "a" };
"#;

const READ: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT 1"}}}"#;
const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_tables","arguments":{}}}"#;

async fn call(
    client: &HttpsClient,
    url: &str,
    token: &str,
    body: &'static [u8],
) -> Result<serde_json::Value, String> {
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(e2e::client::full_body(Bytes::from_static(body)))
        .expect("request");
    let a = client.try_fetch(req).await?;
    if a.status != 200 {
        return Err(format!("{}: {}", a.status, a.text()));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("{e}: {}", a.text()))
}

/// Calls `list_tables` (allowed by every policy here) in a loop until
/// stopped; counts calls and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(client: HttpsClient, url: String, token: String) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match call(&client, &url, &token, LIST).await {
                        Ok(v) if v.get("error").is_none() => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(v) => failures.lock().expect("lock").push(v.to_string()),
                        Err(e) => failures.lock().expect("lock").push(e),
                    }
                }
            }
        });
        Traffic {
            stop,
            ok,
            failures,
            task,
        }
    }

    /// Waits for `n` more successful calls.
    async fn wait_for(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        for _ in 0..400 {
            if self.ok.load(Ordering::Relaxed) >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the request loop stalled: {:?}",
            self.failures.lock().expect("lock")
        );
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task");
        let failures = self.failures.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// The agent stayed on its first connection: one "live" announcement, and
/// the relay saw one connection.
fn assert_same_tunnel(relay: &RelayProc, agent: &AgentProc) {
    let agent_out = agent.proc.stdout.lock().expect("lock").clone();
    assert_eq!(
        count(&agent_out, "is live at"),
        1,
        "the agent reconnected: {agent_out:?}"
    );
    let relay_err = relay.proc.stderr.lock().expect("lock").clone();
    assert_eq!(
        count(&relay_err, "agent connected"),
        1,
        "the relay saw a new tunnel"
    );
    assert_eq!(
        count(&relay_err, "agent disconnected"),
        0,
        "the tunnel dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_takes_effect_while_requests_flow_and_a_broken_policy_is_refused() {
    let dir = TempDir::new("reload-policy");
    let policy = dir.path().join("org.cedar");
    std::fs::write(&policy, NO_ATTACH).expect("write policy");
    let up = Upstream::start("r").await;
    let relay = RelayProc::start(&["--policy", &policy.display().to_string()]).await;
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "quic",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    let url = relay.route_url("demo");

    let v = call(&client, &url, &token, READ).await.expect("call");
    assert!(
        v.get("error").is_none(),
        "read_query is allowed at first: {v}"
    );

    let traffic = Traffic::start(client.clone(), url.clone(), token.clone());
    traffic.wait_for(5).await;

    // A good policy, by SIGHUP: read_query is now forbidden.
    std::fs::write(&policy, NO_READ_QUERY).expect("write policy");
    relay.proc.signal("HUP");
    assert!(
        relay
            .proc
            .wait_stderr("organisation policy reloaded", Duration::from_secs(10))
            .await,
        "{}",
        relay.proc.stderr_text()
    );
    // A tool the caller may not call is one it cannot see: "unknown tool".
    let v = call(&client, &url, &token, READ).await.expect("call");
    assert_eq!(
        v["error"]["message"], "Unknown tool: read_query",
        "read_query is forbidden now: {v}"
    );
    traffic.wait_for(5).await;

    // A broken policy, by `relay reload`: refused with file and line; the
    // policy before it keeps deciding.
    std::fs::write(&policy, BROKEN).expect("write policy");
    let (code, out, err) = relay.admin(&["reload"]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("org.cedar:3") && err.contains("rejected"),
        "{err}"
    );
    assert!(
        relay
            .proc
            .wait_stderr(
                "new organisation policy rejected, the old one stays",
                Duration::from_secs(5)
            )
            .await
    );
    let logged = relay.proc.stderr_text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("rejected") && l.contains("org.cedar:3")),
        "the log line names file and line: {logged}"
    );
    let v = call(&client, &url, &token, READ).await.expect("call");
    assert_eq!(
        v["error"]["message"], "Unknown tool: read_query",
        "the previous policy still applies: {v}"
    );
    traffic.wait_for(5).await;

    let (ok, failures) = traffic.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert_same_tunnel(&relay, &agent);
    assert_eq!(
        relay
            .metric(r#"drawbridge_reloads_total{what="policy",result="ok"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        relay
            .metric(r#"drawbridge_reloads_total{what="policy",result="rejected"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        relay
            .metric(r#"drawbridge_agents_connected{transport="quic"}"#)
            .await,
        Some(1.0)
    );
}

/// A local CA and a server certificate for 127.0.0.1 it issued, expiring
/// at the start of `year`.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA");
    (rcgen::Issuer::new(params, key), cert.pem())
}

fn issue(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, year: i32) -> Issued {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.signed_by(&key, ca).expect("leaf");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn install(issued: &Issued, cert: &Path, key: &Path) {
    std::fs::write(cert, &issued.cert_pem).expect("write cert");
    std::fs::write(key, &issued.key_pem).expect("write key");
}

/// The leaf certificate a new TLS connection to the relay gets.
async fn served_cert(relay: &RelayProc) -> Vec<u8> {
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[b"http/1.1"]).expect("TLS config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = connector.connect(name, tcp).await.expect("TLS handshake");
    conn.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_new_handshakes_and_keeps_the_tunnel() {
    let (ca, ca_pem) = ca();
    let first = issue(&ca, 2040);
    let second = issue(&ca, 2041);
    let state = Arc::new(TempDir::new("reload-cert"));
    // Where the harness's clients and agents look for the CA to trust.
    std::fs::write(state.path().join("ca.pem"), ca_pem).expect("write CA");
    let files = TempDir::new("reload-cert-files");
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    install(&first, &cert, &key);
    let relay = RelayProc::start_with(
        state,
        "127.0.0.1:0",
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    )
    .await;
    assert_eq!(served_cert(&relay).await, first.der);
    // 2040-01-01T00:00:00Z
    assert_eq!(
        relay
            .metric("drawbridge_certificate_expiry_timestamp_seconds")
            .await,
        Some(2_208_988_800.0)
    );

    let up = Upstream::start("c").await;
    // Over TCP, so that the tunnel itself rides on the old certificate.
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "tcp",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    let url = relay.route_url("demo");
    let traffic = Traffic::start(client, url, token);
    traffic.wait_for(5).await;

    install(&second, &cert, &key);
    let (code, out, err) = relay.admin(&["reload"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("certificate") && out.contains("reloaded"),
        "{out}"
    );
    assert_eq!(
        served_cert(&relay).await,
        second.der,
        "a new handshake gets the new certificate"
    );
    assert_eq!(
        relay
            .metric("drawbridge_certificate_expiry_timestamp_seconds")
            .await,
        Some(2_240_611_200.0)
    );
    traffic.wait_for(5).await;

    // Unreadable certificate: refused, the current one stays.
    std::fs::write(&cert, "not a certificate").expect("write");
    let (code, _, err) = relay.admin(&["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cert.pem") && err.contains("rejected"),
        "{err}"
    );
    assert_eq!(served_cert(&relay).await, second.der);
    traffic.wait_for(5).await;

    let (_, failures) = traffic.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_same_tunnel(&relay, &agent);
    assert_eq!(
        relay
            .metric(r#"drawbridge_agents_connected{transport="tcp"}"#)
            .await,
        Some(1.0)
    );
}

#[test]
fn relay_reload_without_a_running_relay_says_so() {
    let dir = TempDir::new("reload-none");
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["reload", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run relay reload");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no relay is running with state dir"), "{err}");
}
