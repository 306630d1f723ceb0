//! `agent share`: the owner shares route `db` with a person or a domain; the
//! peers sign in as themselves (local accounts, the OAuth flow) and get
//! exactly what was granted, decided at the relay and again on the laptop,
//! until the grant is revoked or expires. Somebody else's route cannot be
//! shared, and their grants cannot be revoked.

use std::time::Duration;

use agent::{Credential, Credentials};
use e2e::browser::{add_user, oauth_access_token};
use e2e::client::full_body;
use e2e::mcp::{self, McpClient};
use e2e::procs::bin;
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use rmcp::model::{CallToolRequestParams, JsonObject};
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const DAVE: &str = "dave@partner.org";
const ERIN: &str = "erin@example.com";
const PASSWORD: &str = "correct horse battery";

/// A config dir holding `owner`'s agent credential for `relay`, as `agent
/// login` leaves it.
pub(crate) fn logged_in(relay: &RelayProc, owner: &str, token: &str) -> TempDir {
    let dir = TempDir::new("share-config");
    Credentials::at(dir.path().join("drawbridge").join("credentials.json"))
        .save(
            &url::Url::parse(&relay.url()).expect("url"),
            Credential {
                token: token.to_owned(),
                owner: owner.to_owned(),
                token_id: "t".into(),
                ca_cert: Some(relay.ca()),
                created_at: 0,
            },
        )
        .expect("save credential");
    dir
}

/// Runs `agent share ARGS` with the credentials in `config`: (exit code,
/// stdout, stderr).
pub(crate) async fn share(config: &TempDir, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin("agent"))
        .arg("share")
        .args(args)
        .env("XDG_CONFIG_HOME", config.path())
        .env_remove("DRAWBRIDGE_TOKEN")
        .output()
        .await
        .expect("run agent share");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The grant id `agent share … --with` printed.
pub(crate) fn grant_id(stdout: &str) -> String {
    let at = stdout.find("(grant ").expect("grant id printed") + "(grant ".len();
    stdout[at..].split(')').next().expect("grant id").to_owned()
}

fn args(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

async fn call(client: &McpClient, tool: &str, arguments: Value) -> Result<Value, String> {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(arguments)))
        .await
        .map(|r| {
            assert_eq!(r.is_error, Some(false), "{r:?}");
            r.structured_content.unwrap_or(Value::Null)
        })
        .map_err(|e| e.to_string())
}

/// One raw `initialize` with a bearer token: the JSON-RPC answer.
async fn initialize(relay: &RelayProc, token: &str) -> Value {
    let req = http::Request::builder()
        .method("POST")
        .uri(relay.route_url("db"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(full_body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "sharing-test", "version": "1"}}})
            .to_string(),
        ))
        .expect("request");
    let a = HttpsClient::new(&relay.ca(), false).fetch(req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let text = a.text();
    // JSON, or the event that carries it (after a priming event).
    let json_text = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim))
        .find(|d| d.starts_with('{'))
        .unwrap_or(&text);
    serde_json::from_str(json_text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const COUNT: &str = "SELECT count(*) AS n FROM orders";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_route_gives_each_peer_exactly_the_grant_until_revoked_or_expired() {
    let relay = RelayProc::start(&[]).await;
    for who in [OWNER, BOB, CAROL, DAVE, ERIN] {
        add_user(&relay, who, PASSWORD);
    }
    let dir = TempDir::new("share-db");
    let db = dir.path().join("demo.db").display().to_string();
    let alice_token = relay.token(OWNER, false);
    let agent =
        AgentProc::start_upstream(&relay, &alice_token, "db", &["--sqlite", &db], "auto").await;
    let alice = logged_in(&relay, OWNER, &alice_token);

    // Nobody but Alice yet.
    let bob_token = oauth_access_token(&relay, BOB, PASSWORD, "db").await;
    let v = initialize(&relay, &bob_token).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");

    // Alice shares read_query, read-only, for an hour, with Bob.
    let (code, out, err) = share(
        &alice,
        &[
            "db",
            "--with",
            BOB,
            "--tools",
            "read_query",
            "--read-only",
            "--expires",
            "1h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&relay.route_url("db")), "{out}");
    let bob_grant = grant_id(&out);

    // Bob (same token, nothing to re-do) sees and calls only read_query,
    // and only to read.
    let bob = mcp::connect(&relay.route_url("db"), &relay.ca(), &bob_token).await;
    let tools: Vec<String> = bob
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(tools, ["read_query"]);
    let rows = call(&bob, "read_query", json!({"query": COUNT}))
        .await
        .expect("read");
    assert_eq!(rows["rows"][0]["n"], 25, "{rows}");
    let e = call(&bob, "read_query", json!({"query": "DELETE FROM orders"}))
        .await
        .expect_err("a write");
    assert!(e.contains("-32001") && e.contains("default-deny"), "{e}");
    let e = call(&bob, "list_tables", json!({}))
        .await
        .expect_err("another tool");
    assert!(
        e.contains("-32602") && e.contains("Unknown tool: list_tables"),
        "{e}"
    );
    let e = call(&bob, "write_query", json!({"query": "DELETE FROM orders"}))
        .await
        .expect_err("a write tool");
    assert!(
        e.contains("-32602") && e.contains("Unknown tool: write_query"),
        "{e}"
    );
    // The laptop decided Bob's call with the grant too. It prints its line
    // after the answer has gone, so wait for it.
    let needle = format!("{BOB} tools/call read_query → allow");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stdout = agent.proc.stdout.lock().expect("lock").join("\n");
        if stdout.contains(&needle) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} from the agent: {stdout}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Carol was granted nothing.
    let carol_token = oauth_access_token(&relay, CAROL, PASSWORD, "db").await;
    let v = initialize(&relay, &carol_token).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("default-deny")),
        "{v}"
    );

    // A domain: everybody at partner.org, every tool.
    let (code, out, err) = share(&alice, &["db", "--with", "@partner.org"]).await;
    assert_eq!(code, 0, "{err}");
    let domain_grant = grant_id(&out);
    let dave_token = oauth_access_token(&relay, DAVE, PASSWORD, "db").await;
    let dave = mcp::connect(&relay.route_url("db"), &relay.ca(), &dave_token).await;
    let tables = call(&dave, "list_tables", json!({}))
        .await
        .expect("list_tables");
    assert!(tables.to_string().contains("orders"), "{tables}");
    dave.cancel().await.expect("close");

    // --list shows both.
    let (code, out, err) = share(&alice, &["--list"]).await;
    assert_eq!(code, 0, "{err}");
    let bob_line = out
        .lines()
        .find(|l| l.starts_with(&bob_grant))
        .unwrap_or_else(|| panic!("{out}"));
    for part in ["db", BOB, "read_query", "read-only", "expires 20"] {
        assert!(bob_line.contains(part), "{part}: {bob_line}");
    }
    assert!(
        out.lines().any(|l| l.starts_with(&domain_grant)
            && l.contains("@partner.org")
            && l.contains("all tools")
            && l.contains("never expires")),
        "{out}"
    );

    // Somebody else cannot share Alice's route, nor revoke her grants.
    let bob_config = logged_in(&relay, BOB, &relay.token(BOB, false));
    let (code, _, err) = share(&bob_config, &["db", "--with", CAROL]).await;
    assert_eq!(code, 1);
    assert!(err.contains("belongs to another owner"), "{err}");
    let (code, _, err) = share(&bob_config, &["--revoke", &domain_grant]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no grant"), "{err}");
    let (code, out, _) = share(&bob_config, &["--list"]).await;
    assert_eq!((code, out.trim()), (0, "no grants"));

    // Revoked: Bob's very next request is refused.
    let (code, out, err) = share(&alice, &["--revoke", &bob_grant]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("revoked grant {bob_grant}")), "{out}");
    let e = call(&bob, "read_query", json!({"query": COUNT}))
        .await
        .expect_err("revoked");
    assert!(e.contains("Unknown tool: read_query"), "{e}");
    let v = initialize(&relay, &bob_token).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    let _ = bob.cancel().await;

    // Expired: allowed at first, refused once the time is up.
    let erin_token = oauth_access_token(&relay, ERIN, PASSWORD, "db").await;
    let (code, _, err) = share(&alice, &["db", "--with", ERIN, "--expires", "3s"]).await;
    assert_eq!(code, 0, "{err}");
    let v = initialize(&relay, &erin_token).await;
    assert!(v.get("result").is_some(), "{v}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let v = initialize(&relay, &erin_token).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    let (_, out, _) = share(&alice, &["--list", "db"]).await;
    assert!(
        out.lines()
            .any(|l| l.contains(ERIN) && l.contains("expired ")),
        "{out}"
    );
}
