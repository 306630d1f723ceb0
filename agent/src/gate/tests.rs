//! The laptop decides on its own: whatever the relay let through, the owner's
//! policy is applied again to the body the local server would get.

use protocol::{BodyKind, ExchangeHead, Header, Identity, IdentityKind, UpstreamKind};
use serde_json::{json, Value};

use super::*;

const OWNER: &str = "alice@example.com";

fn head(subject: &str, method: &str, content_type: Option<&str>) -> ExchangeHead {
    ExchangeHead {
        route: "db".into(),
        method: method.into(),
        path: "/".into(),
        headers: content_type
            .map(|ct| Header {
                name: "content-type".into(),
                value: ct.as_bytes().to_vec(),
            })
            .into_iter()
            .collect(),
        identity: Identity {
            subject: subject.into(),
            kind: IdentityKind::ClientToken,
            credential_name: "laptop-test".into(),
            groups: Vec::new(),
        },
        request_id: "r1".into(),
        session: None,
        body: BodyKind::Length(1),
        grants: Vec::new(),
    }
}

fn gate(allow: &[&str], read_only: bool) -> Gate {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    let policy = OwnerPolicy::from_flags(&allow, None, read_only).expect("flags");
    Gate::new(&policy, UpstreamKind::Sqlite, 1024)
}

fn call(tool: &str, query: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": {"query": query}}})
    .to_string()
    .into_bytes()
}

fn refusal(v: &Verdict) -> (StatusCode, Value) {
    match v {
        Verdict::Refuse { status, body } => (*status, body.clone().unwrap_or(Value::Null)),
        Verdict::Pass => panic!("expected a refusal"),
    }
}

#[test]
fn the_owner_passes_and_a_stranger_does_not_whatever_the_relay_said() {
    let g = gate(&[], false);
    let body = call("read_query", "SELECT 1");
    let (v, s) = g.judge_body(&head(OWNER, "POST", Some("application/json")), OWNER, &body);
    assert_eq!(v, Verdict::Pass);
    assert_eq!(s.what, "tools/call read_query");
    assert_eq!(s.policies, ["owner"]);

    // The relay forwarded mallory's call (a relay whose organisation policy
    // permits everybody, say): the laptop still says no.
    let (v, s) = g.judge_body(
        &head("mallory@evil.example", "POST", Some("application/json")),
        OWNER,
        &body,
    );
    let (status, answer) = refusal(&v);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["error"]["code"], policy::body::POLICY_DENIED);
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("the route owner's policy on the laptop: "),
        "{message}"
    );
    assert!(!s.allowed);

    // A GET stream or DELETE needs the same right.
    assert_eq!(
        g.judge_plumbing(&head(OWNER, "GET", None), OWNER).0,
        Verdict::Pass
    );
    let (status, _) = refusal(
        &g.judge_plumbing(&head("mallory@evil.example", "DELETE", None), OWNER)
            .0,
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn read_only_is_judged_on_the_sql_at_the_laptop() {
    let g = gate(&["bob@example.com"], true);
    let json_head = head("bob@example.com", "POST", Some("application/json"));
    assert_eq!(
        g.judge_body(
            &json_head,
            OWNER,
            &call("read_query", "SELECT * FROM orders")
        )
        .0,
        Verdict::Pass
    );
    for sql in [
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "SELECT 1; DELETE FROM orders",
        "ATTACH DATABASE '/tmp/x' AS x",
        "not sql at all (",
    ] {
        let (v, s) = g.judge_body(&json_head, OWNER, &call("read_query", sql));
        let (_, answer) = refusal(&v);
        assert_eq!(
            answer["error"]["code"],
            policy::body::POLICY_DENIED,
            "{sql}"
        );
        assert!(!s.allowed, "{sql}");
    }
    let (v, _) = g.judge_body(&json_head, OWNER, &call("write_query", "SELECT 1"));
    refusal(&v);
}

#[test]
fn read_only_refuses_every_sqlite_file_function_at_the_laptop() {
    // Functions of the SQLite shell's extensions (fileio, zipfile, sqlar):
    // a stdio or HTTP server built on them would read or write files for a
    // query that SQLite counts as reading.
    let g = gate(&["bob@example.com"], true);
    let json_head = head("bob@example.com", "POST", Some("application/json"));
    for sql in [
        "SELECT name FROM fsdir('/etc')",
        "SELECT * FROM fsdir('.') WHERE name LIKE '%.ssh%'",
        "SELECT lsmode(mode) FROM t",
        "SELECT name, data FROM zipfile('/home/alice/secrets.zip')",
        "SELECT zipfile(name, data) FROM t",
        "SELECT * FROM zipfile_cds('/tmp/x.zip')",
        "SELECT sqlar_uncompress(data, sz) FROM sqlar",
        "SELECT SQLAR_COMPRESS(x'00')",
        "SELECT readfile('/etc/passwd')",
    ] {
        let (v, s) = g.judge_body(&json_head, OWNER, &call("read_query", sql));
        let (_, answer) = refusal(&v);
        assert_eq!(
            answer["error"]["code"],
            policy::body::POLICY_DENIED,
            "{sql}"
        );
        assert!(!s.allowed, "{sql}");
        assert!(
            s.policies.iter().any(|p| p == "read-only-functions"),
            "{sql}: {:?}",
            s.policies
        );
    }
    // A table merely named like one of them is not a function call.
    assert_eq!(
        g.judge_body(
            &json_head,
            OWNER,
            &call("read_query", "SELECT name, sz FROM sqlar")
        )
        .0,
        Verdict::Pass
    );
}

#[test]
fn a_batch_with_one_denied_message_is_refused_whole() {
    let g = gate(&[], true);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_query", "arguments": {"query": "SELECT 1"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "write_query", "arguments": {"query": "DELETE FROM orders"}}},
    ])
    .to_string();
    let (v, s) = g.judge_body(
        &head(OWNER, "POST", Some("application/json")),
        OWNER,
        batch.as_bytes(),
    );
    let (_, answer) = refusal(&v);
    let errors = answer.as_array().expect("array");
    assert_eq!(errors.len(), 2);
    assert_eq!(
        errors[0]["error"]["data"]["policies"],
        json!(["batch-refused"])
    );
    assert_eq!(s.what, "batch of 2");
}

#[test]
fn what_cannot_be_read_is_refused() {
    let g = gate(&[], false);
    let (status, answer) = refusal(
        &g.judge_body(
            &head(OWNER, "POST", Some("application/json")),
            OWNER,
            b"{nope",
        )
        .0,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], -32700);
    let (status, _) = refusal(
        &g.judge_body(
            &head(OWNER, "POST", Some("text/plain")),
            OWNER,
            &call("read_query", "SELECT 1"),
        )
        .0,
    );
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A refused body of notifications only is answered 202, with nothing.
    let g = gate(&[], false);
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (v, _) = g.judge_body(
        &head("mallory@evil.example", "POST", Some("application/json")),
        OWNER,
        note,
    );
    assert_eq!(
        v,
        Verdict::Refuse {
            status: StatusCode::ACCEPTED,
            body: None
        }
    );
}

#[test]
fn flags_without_rules_send_no_policy_and_a_file_is_checked_at_start() {
    assert!(OwnerPolicy::from_flags(&[], None, false)
        .expect("default")
        .text
        .is_none());
    let p = OwnerPolicy::from_flags(
        &["@example.com".into()],
        Some(&["read_query".into()]),
        false,
    )
    .expect("flags");
    assert!(p
        .text
        .as_deref()
        .is_some_and(|t| t.contains("allow-@example.com")));
    let dir = std::env::temp_dir().join(format!("gate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.cedar");
    std::fs::write(
        &file,
        "permit (principal, action, resource)\nwhen { context.nope };\n",
    )
    .expect("write");
    let err = OwnerPolicy::from_file(&file)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("bad.cedar") && err.contains("2"), "{err}");
    assert!(OwnerPolicy::from_file(&dir.join("missing.cedar")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_grant_reads_here_only_the_resources_and_prompts_it_names() {
    let g = gate(&[], false);
    let mut bob = head("bob@example.com", "POST", Some("application/json"));
    bob.grants.push(protocol::RouteGrant {
        id: "a1".into(),
        with: "bob@example.com".into(),
        tools: Some(vec!["read_query".into()]),
        read_only: true,
        expires_at: None,
        resources: Vec::new(),
        prompts: Vec::new(),
    });
    let read = |uri: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
            .to_string()
            .into_bytes()
    };
    let prompt = json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/get",
        "params": {"name": "mcp-demo", "arguments": {"topic": "x"}}})
    .to_string()
    .into_bytes();
    // A tools-only grant: whatever the relay let through, refused here.
    let (v, s) = g.judge_body(&bob, OWNER, &read("memo://insights"));
    assert!(matches!(v, Verdict::Refuse { .. }), "{s:?}");
    assert!(matches!(
        g.judge_body(&bob, OWNER, &prompt).0,
        Verdict::Refuse { .. }
    ));
    // Named: read and got; nothing else.
    bob.grants[0].resources = vec!["memo://insights".into()];
    bob.grants[0].prompts = vec!["mcp-*".into()];
    let (v, s) = g.judge_body(&bob, OWNER, &read("memo://insights"));
    assert_eq!(v, Verdict::Pass, "{s:?}");
    assert_eq!(s.policies, ["grant-a1-resources"]);
    assert!(matches!(
        g.judge_body(&bob, OWNER, &read("file:///etc/passwd")).0,
        Verdict::Refuse { .. }
    ));
    assert_eq!(g.judge_body(&bob, OWNER, &prompt).0, Verdict::Pass);
    // The owner, with no flags, reads everything.
    let owner = head(OWNER, "POST", Some("application/json"));
    assert_eq!(
        g.judge_body(&owner, OWNER, &read("file:///etc/passwd")).0,
        Verdict::Pass
    );
}

#[test]
fn grants_from_the_relay_add_to_the_owners_policy_here_too() {
    // The owner's own --read-only still binds the grantee.
    let g = gate(&[], true);
    let mut bob = head("bob@example.com", "POST", Some("application/json"));
    let read = call("read_query", "SELECT 1");
    // No grant: refused.
    let (v, _) = g.judge_body(&bob, OWNER, &read);
    assert!(matches!(v, Verdict::Refuse { .. }));
    bob.grants.push(protocol::RouteGrant {
        id: "a1".into(),
        with: "bob@example.com".into(),
        tools: Some(vec!["read_query".into()]),
        read_only: false,
        expires_at: None,
        resources: Vec::new(),
        prompts: Vec::new(),
    });
    let (v, s) = g.judge_body(&bob, OWNER, &read);
    assert_eq!(v, Verdict::Pass, "{s:?}");
    assert_eq!(s.policies, ["grant-a1-tools"]);
    // The owner's read-only forbids a write, the grant does not widen it.
    let (v, s) = g.judge_body(&bob, OWNER, &call("read_query", "DELETE FROM t"));
    assert!(matches!(v, Verdict::Refuse { .. }));
    assert_eq!(s.policies, ["read-only-sql"]);
    // Another tool, another person, an expired grant, a malformed one: no.
    let (v, _) = g.judge_body(&bob, OWNER, &call("list_tables", ""));
    assert!(matches!(v, Verdict::Refuse { .. }));
    let mut carol = bob.clone();
    carol.identity.subject = "carol@example.com".into();
    assert!(matches!(
        g.judge_body(&carol, OWNER, &read).0,
        Verdict::Refuse { .. }
    ));
    bob.grants[0].expires_at = Some(1);
    assert!(matches!(
        g.judge_body(&bob, OWNER, &read).0,
        Verdict::Refuse { .. }
    ));
    bob.grants[0].expires_at = None;
    bob.grants[0].id = "a1\") permit (principal, action, resource); //".into();
    assert!(matches!(
        g.judge_body(&bob, OWNER, &read).0,
        Verdict::Refuse { .. }
    ));
}

#[test]
fn the_identitys_groups_from_the_relay_reach_the_owners_policy() {
    let dir = std::env::temp_dir().join(format!("gate-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("owner.cedar");
    std::fs::write(
        &file,
        "@id(\"data-group\")\npermit (principal in Group::\"data\", action, resource);\n",
    )
    .expect("write");
    let policy = OwnerPolicy::from_file(&file).expect("policy");
    let _ = std::fs::remove_dir_all(&dir);
    let g = Gate::new(&policy, UpstreamKind::Sqlite, 1024);
    let body = call("read_query", "SELECT 1");

    let mut member = head("carol@example.com", "POST", Some("application/json"));
    member.identity.groups = vec!["data".into(), "eng".into()];
    let (v, s) = g.judge_body(&member, OWNER, &body);
    assert_eq!(v, Verdict::Pass, "{s:?}");

    let mut outsider = head("dave@example.com", "POST", Some("application/json"));
    outsider.identity.groups = vec!["sales".into()];
    let (v, _) = g.judge_body(&outsider, OWNER, &body);
    let (_, answer) = refusal(&v);
    assert_eq!(answer["error"]["code"], policy::body::POLICY_DENIED);
    // Without groups (a version 3 relay), the same member is refused.
    let (v, _) = g.judge_body(
        &head("carol@example.com", "POST", Some("application/json")),
        OWNER,
        &body,
    );
    refusal(&v);
}

#[test]
fn an_mcp_route_takes_only_mcp_whatever_the_relay_sent() {
    let g = gate(&[], false);
    let mut h = head(OWNER, "POST", Some("application/json"));
    assert!(g.judge_route(&h).is_none());
    for (method, path, status, rule) in [
        ("PUT", "/", StatusCode::METHOD_NOT_ALLOWED, "mcp-method"),
        ("HEAD", "/", StatusCode::METHOD_NOT_ALLOWED, "mcp-method"),
        ("OPTIONS", "/", StatusCode::METHOD_NOT_ALLOWED, "mcp-method"),
        (
            "POST",
            "/anything",
            StatusCode::NOT_FOUND,
            "path-below-mcp-route",
        ),
        ("GET", "/../x", StatusCode::BAD_REQUEST, "path-dot-segment"),
        (
            "GET",
            "/%2e%2e/x",
            StatusCode::BAD_REQUEST,
            "path-dot-segment",
        ),
        (
            "POST",
            "@evil.example/",
            StatusCode::BAD_REQUEST,
            "path-not-absolute",
        ),
    ] {
        h.method = method.into();
        h.path = path.into();
        let Some((v, s)) = g.judge_route(&h) else {
            panic!("{method} {path} passed");
        };
        let (got, body) = refusal(&v);
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(s.policies, [rule], "{method} {path}");
        assert!(!s.allowed);
    }
    for method in ["GET", "DELETE", "POST"] {
        h.method = method.into();
        h.path = "/?session_id=1".into();
        assert!(g.judge_route(&h).is_none(), "{method}");
    }
}

#[test]
fn a_plain_route_takes_any_method_but_no_dot_segment_and_read_only_grants_only_read() {
    let policy = OwnerPolicy::from_flags(&[], None, false).expect("flags");
    let g = Gate::new(&policy, UpstreamKind::PlainHttp, 1024);
    let mut h = head(OWNER, "PUT", None);
    h.path = "/files/a.txt".into();
    assert!(g.judge_route(&h).is_none());
    assert_eq!(g.judge_plumbing(&h, OWNER).0, Verdict::Pass);
    h.path = "/files/..%2f..%2fetc/passwd".into();
    assert!(g.judge_route(&h).is_some());
    // Bob with a read-only grant: GET yes, PUT no; a full grant: both.
    let mut bob = head("bob@example.com", "GET", None);
    bob.path = "/files/a.txt".into();
    bob.grants.push(protocol::RouteGrant {
        id: "b2".into(),
        with: "bob@example.com".into(),
        tools: None,
        read_only: true,
        expires_at: None,
        resources: Vec::new(),
        prompts: Vec::new(),
    });
    assert_eq!(g.judge_plumbing(&bob, OWNER).0, Verdict::Pass);
    for method in ["PUT", "POST", "DELETE", "PATCH"] {
        bob.method = method.into();
        let (v, s) = g.judge_plumbing(&bob, OWNER);
        let (status, body) = refusal(&v);
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
        assert_eq!(body["error"], "read_only");
        assert_eq!(s.policies, ["read-only-method"]);
    }
    bob.grants[0].read_only = false;
    assert_eq!(g.judge_plumbing(&bob, OWNER).0, Verdict::Pass);
    // The owner is never limited by a read-only grant to someone.
    h.path = "/files/a.txt".into();
    h.grants = bob.grants.clone();
    h.grants[0].read_only = true;
    assert_eq!(g.judge_plumbing(&h, OWNER).0, Verdict::Pass);
}
