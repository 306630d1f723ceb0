//! OAuth scopes and step-up: a token with only `mcp:read` reads, its write
//! gets 403 `insufficient_scope` naming `mcp`, and the official Python MCP
//! SDK (which handles the challenge itself) authorizes again — the person
//! consents again, as the scope grew — and the write then succeeds.

use e2e::browser::add_user;
use e2e::{AgentProc, RelayProc, TempDir};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_steps_up_to_write() {
    let relay = RelayProc::start(&[]).await;
    add_user(&relay, EMAIL, PASSWORD);
    let dir = TempDir::new("stepup");
    let db = dir.path().join("demo.db").display().to_string();
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token(EMAIL, false),
        "db",
        &["--sqlite", &db],
        "auto",
    )
    .await;

    let v = e2e::python::run_json(
        "oauth_step_up.py",
        &[
            relay.route_url("db").into(),
            relay.ca().into(),
            EMAIL.into(),
            PASSWORD.into(),
        ],
    )
    .await;

    // Reading with the read-only token.
    assert_eq!(v["scope_before_write"], "mcp:read", "{v}");
    assert_eq!(v["read"]["is_error"], false, "{v}");
    assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");

    // The write was refused once, with the challenge naming the scope.
    let challenges = v["challenges"].as_array().expect("challenges");
    assert_eq!(challenges.len(), 1, "{v}");
    let header = challenges[0]["www_authenticate"]
        .as_str()
        .expect("WWW-Authenticate on the 403");
    let metadata = format!(
        "{}/.well-known/oauth-protected-resource/mcp/db",
        relay.url()
    );
    assert!(
        header.starts_with("Bearer error=\"insufficient_scope\", scope=\"mcp\", "),
        "{header}"
    );
    assert!(
        header.contains(&format!("resource_metadata=\"{metadata}\"")),
        "{header}"
    );
    let body = &challenges[0]["body"];
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["error"]["code"], -32003, "{body}");
    assert_eq!(body["error"]["data"]["scope"], "mcp", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tools/call write_query")),
        "{body}"
    );

    // Authorized again with the scopes united; consent was asked again.
    assert_eq!(
        v["requested_scopes"],
        serde_json::json!(["mcp:read", "mcp:read mcp"]),
        "{v}"
    );
    assert_eq!(
        v["pages"],
        serde_json::json!(["login", "consent", "consent"]),
        "{v}"
    );
    // The consent page says what each scope means.
    let pages = v["consent_pages"].as_array().expect("consent pages");
    assert!(
        pages[0].as_str().is_some_and(|p| p.contains("read only")
            && p.contains("<code>mcp:read</code>")
            && !p.contains("<code>mcp</code>")),
        "{}",
        pages[0]
    );
    assert!(
        pages[1].as_str().is_some_and(|p| p.contains("full use")),
        "{}",
        pages[1]
    );

    // The retried write succeeded.
    assert_eq!(v["scope"], "mcp:read mcp", "{v}");
    assert_eq!(v["write"]["is_error"], false, "{v}");
    assert_eq!(v["read_after"]["structured"]["rows"][0]["n"], 13, "{v}");

    // The audit records the refusal and its reason.
    let mut refused = Vec::new();
    for _ in 0..100 {
        let (code, out, err) = relay.admin(&["audit", "--json", "--decision", "deny"]);
        assert_eq!(code, 0, "{err}");
        refused = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .filter(|e| e["target"] == "write_query")
            .collect();
        if !refused.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["policy"],
        serde_json::json!(["insufficient-scope"]),
        "{}",
        refused[0]
    );
    assert_eq!(refused[0]["status"], 403, "{}", refused[0]);
    assert_eq!(refused[0]["identity"], EMAIL, "{}", refused[0]);
}
