//! Grants and the owner's flags name the resources and prompts they allow
//! (issue 14, item 7): a grantee reads only the resources and gets only the
//! prompts their grant names, and `resources/list`,
//! `resources/templates/list` and `prompts/list` show nothing else; the
//! owner, with no flags, keeps everything; `agent connect --resources` and
//! `--prompts` bind everybody, the owner too.

use e2e::browser::{add_user, oauth_access_token};
use e2e::client::full_body;
use e2e::mcp::{self, McpClient};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use rmcp::model::{GetPromptRequestParams, JsonObject, ReadResourceRequestParams};
use serde_json::{json, Value};

use crate::sharing::{grant_id, logged_in, share};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";
const PASSWORD: &str = "correct horse battery";

async fn resources(client: &McpClient) -> Vec<String> {
    client
        .list_all_resources()
        .await
        .expect("resources/list")
        .into_iter()
        .map(|r| r.uri.clone())
        .collect()
}

async fn prompts(client: &McpClient) -> Vec<String> {
    client
        .list_all_prompts()
        .await
        .expect("prompts/list")
        .into_iter()
        .map(|p| p.name.clone())
        .collect()
}

async fn read_memo(client: &McpClient) -> Result<String, String> {
    client
        .read_resource(ReadResourceRequestParams::new("memo://insights"))
        .await
        .map(|r| format!("{:?}", r.contents))
        .map_err(|e| e.to_string())
}

async fn get_demo(client: &McpClient) -> Result<String, String> {
    let mut args = JsonObject::new();
    args.insert("topic".into(), json!("coffee roasting"));
    client
        .get_prompt(GetPromptRequestParams::new("mcp-demo").with_arguments(args))
        .await
        .map(|p| format!("{:?}", p.messages))
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_reads_only_the_resources_and_gets_only_the_prompts_it_names() {
    let relay = RelayProc::start(&[]).await;
    for who in [BOB, CAROL] {
        add_user(&relay, who, PASSWORD);
    }
    let dir = TempDir::new("grant-resources");
    let db = dir.path().join("demo.db").display().to_string();
    let alice_token = relay.token(OWNER, false);
    let agent =
        AgentProc::start_upstream(&relay, &alice_token, "db", &["--sqlite", &db], "auto").await;
    let alice = logged_in(&relay, OWNER, &alice_token);

    // Bob: read_query only. Carol: read_query, the memo resources (a
    // pattern) and the demo prompt.
    let (code, _, err) = share(
        &alice,
        &["db", "--with", BOB, "--tools", "read_query", "--read-only"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = share(
        &alice,
        &[
            "db",
            "--with",
            CAROL,
            "--tools",
            "read_query",
            "--resources",
            "memo://*",
            "--prompts",
            "mcp-demo",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let carol_grant = grant_id(&out);
    let (code, out, err) = share(&alice, &["--list"]).await;
    assert_eq!(code, 0, "{err}");
    let carol_line = out
        .lines()
        .find(|l| l.starts_with(&carol_grant))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        carol_line.contains("resources memo://*") && carol_line.contains("prompts mcp-demo"),
        "{carol_line}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(BOB) && l.contains("no resources") && l.contains("no prompts")),
        "{out}"
    );

    // Bob is refused the memo and the prompt, and sees neither listed.
    let bob_token = oauth_access_token(&relay, BOB, PASSWORD, "db").await;
    let bob = mcp::connect(&relay.route_url("db"), &relay.ca(), &bob_token).await;
    let tools: Vec<String> = bob
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(tools, ["read_query"]);
    assert!(resources(&bob).await.is_empty());
    assert!(prompts(&bob).await.is_empty());
    let e = read_memo(&bob).await.expect_err("a resource not granted");
    assert!(e.contains("-32001") && e.contains("default-deny"), "{e}");
    let e = get_demo(&bob).await.expect_err("a prompt not granted");
    assert!(e.contains("-32001") && e.contains("default-deny"), "{e}");

    // Carol reads the memo and gets the prompt her grant names.
    let carol_token = oauth_access_token(&relay, CAROL, PASSWORD, "db").await;
    let carol = mcp::connect(&relay.route_url("db"), &relay.ca(), &carol_token).await;
    assert_eq!(resources(&carol).await, ["memo://insights"]);
    assert_eq!(prompts(&carol).await, ["mcp-demo"]);
    let memo = read_memo(&carol).await.expect("the memo, granted");
    assert!(memo.contains("memo://insights"), "{memo}");
    let prompt = get_demo(&carol).await.expect("the prompt, granted");
    assert!(prompt.contains("coffee roasting"), "{prompt}");
    // The laptop decided her read with the grant too (it logs after the
    // answer has gone, so wait for the line).
    let needle =
        format!("{CAROL} resources/read memo://insights → allow (grant-{carol_grant}-resources)");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stdout = agent.proc.stdout.lock().expect("lock").join("\n");
        if stdout.contains(&needle) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} from the agent: {stdout}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    // The owner, with no flags, keeps everything.
    let owner = mcp::connect(
        &relay.route_url("db"),
        &relay.ca(),
        &relay.token(OWNER, true),
    )
    .await;
    assert_eq!(resources(&owner).await, ["memo://insights"]);
    assert_eq!(prompts(&owner).await, ["mcp-demo"]);
    read_memo(&owner).await.expect("the owner's memo");
    get_demo(&owner).await.expect("the owner's prompt");
    for c in [bob, carol, owner] {
        c.cancel().await.expect("close");
    }
}

/// `agent connect --resources 'public://*' --prompts public_prompt`, in
/// front of a local server that lists public and secret resources,
/// templates and prompts: the owner sees and uses only what is named, in
/// JSON and event-stream answers; an answer the relay cannot read fails
/// closed, as for tools/list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_flags_name_the_only_resources_and_prompts_and_every_list_is_filtered() {
    use e2e::upstream::{
        PUBLIC_PROMPT, PUBLIC_RESOURCE, PUBLIC_TEMPLATE, SECRET_PROMPT, SECRET_RESOURCE,
        SECRET_TEMPLATE,
    };
    let up = e2e::Upstream::start("lists").await;
    let relay = RelayProc::start(&[]).await;
    let mut agent = AgentProc::spawn_upstream(
        &relay,
        &relay.token(OWNER, false),
        "lists",
        &["--http", &format!("{}/mcp", up.url())],
        "auto",
        &["--resources", "public://*", "--prompts", PUBLIC_PROMPT],
    );
    agent.wait_live().await;
    let token = relay.token(OWNER, true);
    let client = HttpsClient::new(&relay.ca(), false);
    let post = |as_path: &str, body: Value| {
        http::Request::builder()
            .method("POST")
            .uri(format!("{}?as={as_path}", relay.route_url("lists")))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(full_body(body.to_string()))
            .expect("request")
    };
    let message = |answer: &e2e::client::Answer| -> Value {
        let text = answer.text();
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v["id"] == 2)
            .unwrap_or_else(|| answer.json())
    };
    for (method, member, key, public, secret) in [
        (
            "resources/list",
            "resources",
            "uri",
            PUBLIC_RESOURCE,
            SECRET_RESOURCE,
        ),
        (
            "resources/templates/list",
            "resourceTemplates",
            "uriTemplate",
            PUBLIC_TEMPLATE,
            SECRET_TEMPLATE,
        ),
        (
            "prompts/list",
            "prompts",
            "name",
            PUBLIC_PROMPT,
            SECRET_PROMPT,
        ),
    ] {
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": method});
        for how in ["json", "sse"] {
            let answer = client
                .fetch(post(&format!("/tools-list/{how}"), list.clone()))
                .await;
            assert_eq!(answer.status, 200, "{method} {how}: {}", answer.text());
            assert!(!answer.text().contains(secret), "{method} {how}");
            let m = message(&answer);
            let items: Vec<&str> = m["result"][member]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {how}: {m}"))
                .iter()
                .filter_map(|i| i[key].as_str())
                .collect();
            assert_eq!(items, [public], "{method} {how}");
        }
        // Unreadable: the "unfilterable" error, never the secret.
        let answer = client
            .fetch(post("/tools-list/json-rpc", list.clone()))
            .await;
        assert_eq!(answer.status, 502, "{method}: {}", answer.text());
        assert!(!answer.text().contains(secret), "{method}");
        let m = answer.json();
        assert_eq!(m["error"]["code"], -32603, "{m}");
        let text = m["error"]["message"].as_str().expect("message");
        assert!(
            text.contains(&format!("cannot filter this {method} answer")),
            "{text}"
        );
    }

    // Reading and getting: what is named reaches the server, the rest is
    // refused at the relay by the owner's own flags.
    let read = |uri: &str| json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}});
    let get = |name: &str| json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": name}});
    for (body, policy) in [
        (read(SECRET_RESOURCE), "resources"),
        (get(SECRET_PROMPT), "prompts"),
    ] {
        let answer = client.fetch(post("/echo", body.clone())).await;
        let m = message(&answer);
        assert_eq!(m["error"]["code"], -32001, "{body}: {m}");
        assert_eq!(m["error"]["data"]["policies"], json!([policy]), "{m}");
    }
    for body in [read(PUBLIC_RESOURCE), get(PUBLIC_PROMPT)] {
        let answer = client.fetch(post("/echo", body.clone())).await;
        assert_eq!(answer.status, 200, "{body}: {}", answer.text());
        let echoed = answer.json();
        assert_eq!(echoed["method"], "POST", "{echoed}");
        assert!(
            echoed
                .to_string()
                .contains(body["method"].as_str().expect("method")),
            "{echoed}"
        );
    }
    drop(agent);
}
