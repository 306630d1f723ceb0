//! Tests of the policy engine: the decision matrix, loading errors, layering,
//! tool listing and the example policies of `deploy/policies/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::load::{line_col, schema};
use super::reads::Reads;
use super::request::{build, rfc3339, unix_seconds, Facts, Vocabulary};
use super::*;
use crate::jsonrpc::{classify_body, Message, MessageKind};
use crate::sql::classify;

const OWNER: &str = "alice@example.com";
const ROUTE: &str = "crm";
/// 2026-06-01T00:00:00Z.
const JUNE_2026: u64 = 1_780_272_000;
/// 2027-01-02T00:00:00Z.
const JAN_2027: u64 = 1_798_848_000;

const OWNER_ONLY: &str = include_str!("../../../deploy/policies/owner-only.cedar");
const SHARE_READ_ONLY: &str = include_str!("../../../deploy/policies/share-read-only.cedar");
const ORG_NO_ATTACH: &str = include_str!("../../../deploy/policies/org-no-attach.cedar");

const SQLITE_TOOLS: [&str; 6] = [
    "read_query",
    "write_query",
    "create_table",
    "list_tables",
    "describe_table",
    "append_insight",
];

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

fn caller(email: &str) -> Caller<'_> {
    Caller {
        email,
        groups: &[],
        client_id: "client-1",
        client_name: Some("ChatGPT"),
        route: ROUTE,
        route_owner: OWNER,
        time: at(JUNE_2026),
    }
}

fn message(value: Value) -> Message {
    let mut messages = classify_body(value.to_string().as_bytes()).expect("valid message");
    assert_eq!(messages.len(), 1);
    messages.remove(0)
}

fn request(method: &str) -> Message {
    message(json!({"jsonrpc": "2.0", "id": 1, "method": method}))
}

fn call(tool: &str, arguments: Value) -> Message {
    message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}}))
}

fn sql_call(tool: &str, sql: &str) -> Message {
    call(tool, json!({"query": sql}))
}

/// Decide as the gateway will: SQL facts classified from the message.
fn decide_as(engine: &Engine, caller: Caller<'_>, message: &Message) -> Decision {
    let facts = message.sql_argument().map(classify);
    engine.decide(&Request {
        caller,
        message,
        sql: facts.as_ref(),
    })
}

fn decide(engine: &Engine, email: &str, message: &Message) -> Decision {
    decide_as(engine, caller(email), message)
}

fn flags(allow: &[&str], tools: Option<&[&str]>, read_only: bool) -> Engine {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    let tools: Option<Vec<String>> = tools.map(|t| t.iter().map(|s| s.to_string()).collect());
    let policy = Policy::from_flags(&allow, tools.as_deref(), read_only).expect("flags compile");
    Engine::new(policy, None)
}

fn cedar(text: &str) -> Policy {
    Policy::from_cedar_text(text, "test.cedar").unwrap_or_else(|e| panic!("{e}"))
}

fn assert_allowed(decision: &Decision, policies: &[&str]) {
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.policies, policies, "{decision:?}");
    assert!(decision.errors.is_empty(), "{decision:?}");
}

fn assert_denied(decision: &Decision, policies: &[&str]) {
    assert!(!decision.allowed, "{decision:?}");
    assert_eq!(decision.policies, policies, "{decision:?}");
}

/// One message of every action.
fn every_action() -> Vec<Message> {
    vec![
        request("initialize"),
        request("server/discover"),
        request("ping"),
        message(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        message(json!({"jsonrpc": "2.0", "id": 7, "result": {}})),
        request("tools/list"),
        request("resources/list"),
        request("resources/templates/list"),
        request("prompts/list"),
        sql_call("read_query", "SELECT 1"),
        call("list_tables", json!({})),
        read_resource(),
        message(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get",
            "params": {"name": "mcp-demo", "arguments": {"topic": "x"}}})),
        request("completion/complete"),
    ]
}

fn read_resource() -> Message {
    message(
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
        "params": {"uri": "memo://insights"}}),
    )
}

// ---------------------------------------------------------------- schema ---

#[test]
fn schema_loads() {
    schema().expect("the built-in schema parses");
    assert!(Vocabulary::get().is_ok());
}

#[test]
fn every_request_fits_the_schema() {
    let schema = schema().expect("schema");
    let vocabulary = Vocabulary::get().expect("vocabulary");
    let groups = ["ops".to_owned(), "Data Team".to_owned()];
    let mut who = caller("Bob@Example.com");
    who.groups = &groups;
    who.client_name = None;
    let mut messages = every_action();
    messages.push(sql_call("read_query", "SELECT * FROM main.t JOIN u"));
    messages.push(call(
        "weird",
        json!({"n": 1, "o": {"a": [1]}, "s": "x", "z": null}),
    ));
    for message in &messages {
        let facts_owned = message.sql_argument().map(classify);
        let facts = Facts {
            action: Action::of(message),
            method: message.method.as_deref().unwrap_or_default(),
            target: message.target.as_deref(),
            arguments: message.arguments.as_ref(),
            sql: facts_owned.as_ref(),
            listing: false,
        };
        build(vocabulary, &who, &facts, Some(schema), Reads::NONE)
            .unwrap_or_else(|e| panic!("{message:?}: {e}"));
    }
    // The listing form too.
    let facts = Facts {
        action: Action::CallTool,
        method: "tools/call",
        target: Some("read_query"),
        arguments: None,
        sql: None,
        listing: true,
    };
    build(vocabulary, &who, &facts, Some(schema), Reads::NONE).expect("listing request");
}

#[test]
fn messages_map_to_actions() {
    let cases = [
        (request("initialize"), Action::Initialize),
        (request("server/discover"), Action::Initialize),
        (request("ping"), Action::Ping),
        (
            message(json!({"jsonrpc": "2.0", "method": "notifications/cancelled"})),
            Action::Notify,
        ),
        (
            message(json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            Action::Respond,
        ),
        (
            message(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "no"}})),
            Action::Respond,
        ),
        (request("tools/list"), Action::ListTools),
        (call("x", json!({})), Action::CallTool),
        (request("resources/list"), Action::ListResources),
        (request("resources/templates/list"), Action::ListResources),
        (
            message(
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                "params": {"uri": "a://b"}}),
            ),
            Action::ReadResource,
        ),
        (request("prompts/list"), Action::ListPrompts),
        (
            message(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get",
                "params": {"name": "p"}})),
            Action::GetPrompt,
        ),
        (request("logging/setLevel"), Action::OtherMethod),
        (request("Tools/List"), Action::OtherMethod),
    ];
    for (message, action) in cases {
        assert_eq!(Action::of(&message), action, "{message:?}");
    }
    // Every action is declared in the schema.
    for action in Action::ALL {
        assert!(
            SCHEMA_TEXT.contains(&format!("action {} ", action.as_str())),
            "{}",
            action.as_str()
        );
    }
}

#[test]
fn time_as_datetime() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(946_684_799), "1999-12-31T23:59:59Z");
    assert_eq!(rfc3339(1_798_761_600), "2027-01-01T00:00:00Z");
    assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    assert_eq!(unix_seconds(at(JUNE_2026)), 1_780_272_000);
    assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(3)), -3);
}

// ---------------------------------------------------------------- matrix ---

#[test]
fn default_is_owner_only() {
    let engine = flags(&[], None, false);
    for message in every_action() {
        assert_allowed(&decide(&engine, OWNER, &message), &["owner"]);
        assert_allowed(&decide(&engine, "ALICE@example.COM", &message), &["owner"]);
        assert_denied(
            &decide(&engine, "mallory@example.com", &message),
            &[NO_PERMIT],
        );
    }
    // Looking like the owner is not being the owner.
    for email in ["alice@example.com.evil.net", "alice", "alice@example.co"] {
        assert_denied(&decide(&engine, email, &request("ping")), &[NO_PERMIT]);
    }
    // No identity is nobody, even on a route whose owner is unknown.
    let engine = Engine::new(cedar(OWNER_ONLY), None);
    let mut nobody = caller(" ");
    nobody.route_owner = "";
    let decision = decide_as(&engine, nobody, &request("ping"));
    assert!(!decision.allowed, "{decision:?}");
    assert!(decision.errors[0].contains("no identity"), "{decision:?}");
}

#[test]
fn allowed_by_email_and_by_domain() {
    let engine = flags(&["Bob@Example.com", "@corp.com"], None, false);
    let list = request("tools/list");
    assert_allowed(
        &decide(&engine, "bob@example.com", &list),
        &["allow-bob@example.com"],
    );
    assert_allowed(
        &decide(&engine, "carol@corp.com", &list),
        &["allow-@corp.com"],
    );
    assert_allowed(
        &decide(&engine, "Dave@CORP.com", &list),
        &["allow-@corp.com"],
    );
    for stranger in [
        "carol@example.com",
        "carol@sub.corp.com",
        "carol@corp.com.evil.net",
        "corp.com@evil.net",
        "carol@notcorp.com",
    ] {
        assert_denied(&decide(&engine, stranger, &list), &[NO_PERMIT]);
    }
    assert!(engine
        .owner()
        .cedar_text()
        .contains("@id(\"allow-@corp.com\")"));
}

#[test]
fn tools_flag_restricts_calls_for_everybody() {
    let engine = flags(
        &["bob@example.com"],
        Some(&["read_query", "list_tables"]),
        false,
    );
    for who in [OWNER, "bob@example.com"] {
        let read = decide(&engine, who, &sql_call("read_query", "SELECT 1"));
        assert!(read.allowed, "{read:?}");
        assert!(decide(&engine, who, &call("list_tables", json!({}))).allowed);
        assert_denied(
            &decide(&engine, who, &sql_call("write_query", "DELETE FROM t")),
            &["tools"],
        );
        assert_denied(
            &decide(&engine, who, &call("describe_table", json!({}))),
            &["tools"],
        );
        // Other methods are not tools.
        assert!(decide(&engine, who, &request("tools/list")).allowed);
    }
    // An empty list: no tool at all.
    let none = flags(&[], Some(&[]), false);
    assert_denied(
        &decide(&none, OWNER, &call("list_tables", json!({}))),
        &["tools"],
    );
    assert!(decide(&none, OWNER, &request("tools/list")).allowed);
}

#[test]
fn read_only_judges_the_sql_not_the_tool_name() {
    let engine = flags(&["bob@example.com"], None, true);
    for who in [OWNER, "bob@example.com"] {
        for sql in [
            "SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "PRAGMA table_info(t)",
            "EXPLAIN DELETE FROM t",
        ] {
            let d = decide(&engine, who, &sql_call("read_query", sql));
            assert!(d.allowed, "{sql}: {d:?}");
        }
        for sql in [
            "WITH x AS (SELECT 1) DELETE FROM t",
            "SELECT 1; DROP TABLE t",
            "INSERT INTO t VALUES (1)",
            "ATTACH 'x.db' AS x",
            "PRAGMA journal_mode = DELETE",
            "BEGIN",
        ] {
            assert_denied(
                &decide(&engine, who, &sql_call("read_query", sql)),
                &["read-only-sql"],
            );
        }
        // Known write tools, even with SQL that reads.
        for tool in WRITE_TOOLS {
            assert_denied(
                &decide(&engine, who, &sql_call(tool, "SELECT 1")),
                &["read-only-tools"],
            );
        }
        assert_denied(
            &decide(
                &engine,
                who,
                &call("append_insight", json!({"insight": "x"})),
            ),
            &["read-only-tools"],
        );
        // A write with a write tool: both rules name themselves.
        assert_denied(
            &decide(&engine, who, &sql_call("write_query", "DELETE FROM t")),
            &["read-only-sql", "read-only-tools"],
        );
        // An unknown tool cannot pass by carrying a harmless query.
        assert_denied(
            &decide(&engine, who, &sql_call("delete_file", "SELECT 1")),
            &["read-only-tools"],
        );
        assert_denied(
            &decide(&engine, who, &call("delete_file", json!({"path": "/x"}))),
            &["read-only-tools"],
        );
        // read_query needs SQL it can judge.
        for arguments in [
            json!({}),
            json!({"query": ["DELETE FROM t"]}),
            json!({"q": "x"}),
        ] {
            assert_denied(
                &decide(&engine, who, &call("read_query", arguments)),
                &["read-only-no-sql"],
            );
        }
        // Read tools without SQL.
        assert!(decide(&engine, who, &call("list_tables", json!({}))).allowed);
        assert!(
            decide(
                &engine,
                who,
                &call("describe_table", json!({"table_name": "t"}))
            )
            .allowed
        );
        // SQL that reads but loads code or touches files.
        assert_denied(
            &decide(
                &engine,
                who,
                &sql_call("read_query", "SELECT load_extension('/tmp/x.so')"),
            ),
            &["read-only-functions"],
        );
        // Resources and prompts are reads.
        assert!(decide(&engine, who, &read_resource()).allowed);
    }
}

#[test]
fn sql_that_does_not_parse_fails_closed() {
    for engine in [flags(&[], None, true), flags(&[], None, false)] {
        for sql in [
            "SELEC 1",
            "",
            "SELECT 'unterminated",
            "REINDEX",
            "DELETE FROM t; SELEC 1",
        ] {
            assert_denied(
                &decide(&engine, OWNER, &sql_call("read_query", sql)),
                &[UNPARSED_SQL],
            );
        }
    }
    // Without facts from the caller, the engine classifies the SQL itself.
    let engine = flags(&[], None, true);
    let message = sql_call("read_query", "WITH x AS (SELECT 1) DELETE FROM t");
    let decision = engine.decide(&Request {
        caller: caller(OWNER),
        message: &message,
        sql: None,
    });
    assert_denied(&decision, &["read-only-sql"]);
    let message = sql_call("read_query", "SELEC 1");
    let decision = engine.decide(&Request {
        caller: caller(OWNER),
        message: &message,
        sql: None,
    });
    assert_denied(&decision, &[UNPARSED_SQL]);
}

// -------------------------------------------------------------- layering ---

#[test]
fn org_forbid_beats_owner_permit() {
    let org = Policy::from_cedar_text(ORG_NO_ATTACH, "org-no-attach.cedar").expect("org");
    assert!(!org.has_permit());
    let owner = Policy::from_flags(&[], None, false).expect("owner");
    let engine = Engine::new(owner, Some(org));
    assert_denied(
        &decide(
            &engine,
            OWNER,
            &sql_call("write_query", "ATTACH 'other.db' AS o"),
        ),
        &["org/no-attach"],
    );
    // Not forbidden by the org: the owner's permit decides.
    assert_allowed(
        &decide(&engine, OWNER, &sql_call("write_query", "DELETE FROM t")),
        &["owner"],
    );
    // Both layers deny: both are named.
    assert_denied(
        &decide(
            &engine,
            "eve@example.com",
            &sql_call("read_query", "ATTACH 'x' AS x"),
        ),
        &[NO_PERMIT, "org/no-attach"],
    );
}

#[test]
fn org_permit_never_widens_a_route() {
    let org = cedar(
        r#"@id("everybody") permit (principal, action, resource);
           @id("no-drop") forbid (principal, action, resource)
           when { context.sql.kinds.contains("drop") };"#,
    );
    let engine = Engine::new(
        Policy::from_flags(&[], None, false).expect("owner"),
        Some(org),
    );
    assert_denied(
        &decide(&engine, "eve@example.com", &request("ping")),
        &[NO_PERMIT],
    );
    assert_allowed(
        &decide(&engine, OWNER, &request("ping")),
        &["owner", "org/everybody"],
    );
    assert_denied(
        &decide(&engine, OWNER, &sql_call("write_query", "DROP TABLE t")),
        &["org/no-drop"],
    );
}

#[test]
fn org_permits_restrict_every_route() {
    // An organisation that permits only its own domain.
    let org = cedar(
        r#"@id("corp-only") permit (principal, action, resource) when { principal.domain == "corp.com" };"#,
    );
    let owner = Policy::from_flags(&["carol@corp.com".to_owned()], None, false).expect("owner");
    let engine = Engine::new(owner, Some(org));
    assert_denied(&decide(&engine, OWNER, &request("ping")), &[ORG_NO_PERMIT]);
    assert_allowed(
        &decide(&engine, "carol@corp.com", &request("ping")),
        &["allow-carol@corp.com", "org/corp-only"],
    );
    // An org member the owner did not allow.
    assert_denied(
        &decide(&engine, "dave@corp.com", &request("ping")),
        &[NO_PERMIT],
    );
}

#[test]
fn evaluation_errors_fail_closed() {
    // Overflow is only found at evaluation. Cedar alone would skip the
    // erroring forbid and allow.
    let policy = cedar(
        r#"@id("owner") permit (principal, action, resource) when { principal.email == context.route.owner };
           @id("overflows") forbid (principal, action, resource) when { context.time * 9223372036854775807 > 0 };"#,
    );
    let engine = Engine::new(policy, None);
    let decision = decide(&engine, OWNER, &request("ping"));
    assert_denied(&decision, &["overflows"]);
    assert_eq!(decision.errors.len(), 1, "{decision:?}");
    assert!(decision.errors[0].contains("overflow"), "{decision:?}");
    assert!(
        decision.message().contains("evaluation failed"),
        "{}",
        decision.message()
    );

    // A tools/call without a tool cannot be built: denied too.
    let mut broken = call("x", json!({}));
    broken.target = None;
    let decision = decide(&flags(&[], None, false), OWNER, &broken);
    assert!(!decision.allowed);
    assert!(
        decision.errors[0].contains("without a tool name"),
        "{decision:?}"
    );
}

// ---------------------------------------------------------------- loading ---

#[test]
fn schema_typo_is_refused_with_its_line() {
    let text = "// Bob may list.\n\
                @id(\"bob\")\n\
                permit (principal, action == Action::\"list_tools\", resource)\n\
                when { principal.emial == \"bob@example.com\" };\n";
    let error = Policy::from_cedar_text(text, "owner.cedar").expect_err("typo");
    let PolicyError::Invalid {
        source_name,
        problems,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(source_name, "owner.cedar");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(4));
    assert_eq!(problems[0].column, Some(8));
    assert_eq!(problems[0].policy.as_deref(), Some("bob"));
    let shown = error.to_string();
    assert!(shown.contains("owner.cedar:4:8: "), "{shown}");
    assert!(shown.contains("emial"), "{shown}");
    assert!(shown.contains("did you mean `email`?"), "{shown}");

    // Columns count characters, not bytes.
    let error = Policy::from_cedar_text(
        "// ünïcödé\npermit (principal, action, resource) when { \"é\" == principal.emial };",
        "u.cedar",
    )
    .expect_err("typo");
    assert!(error.to_string().contains("u.cedar:2:52: "), "{error}");

    // Unknown action, unknown entity type, unguarded optional attribute.
    for (text, line, needle) in [
        ("\npermit (principal, action == Action::\"call_tools\", resource);", 2, "call_tools"),
        ("permit (principal == Usr::\"a\", action, resource);", 1, "Usr"),
        (
            "permit (principal, action, resource)\nwhen { context.tool == \"x\" };",
            2,
            "context has tool",
        ),
        (
            "permit (principal, action == Action::\"ping\", resource)\nwhen { resource.owner == \"x\" && context.sql.read_onyl };",
            2,
            "read_onyl",
        ),
        // Can never apply: call_tool's resource is a Tool, not a Route.
        (
            "permit (principal, action == Action::\"call_tool\",\n resource == Route::\"crm\");",
            1,
            "unable to find an applicable action",
        ),
        ("permit (principal, action, resource) when { false };", 1, "policy is impossible"),
    ] {
        let error = Policy::from_cedar_text(text, "p.cedar").expect_err(text);
        let shown = error.to_string();
        assert!(matches!(error, PolicyError::Invalid { .. }), "{shown}");
        assert!(shown.contains(&format!("p.cedar:{line}:")), "{shown}");
        assert!(shown.contains(needle), "{shown}");
    }
}

#[test]
fn syntax_errors_are_located() {
    let text =
        "@id(\"a\")\npermit (principal, action, resource)\n\nforbid (principal, action resource);";
    let error = Policy::from_cedar_text(text, "org.cedar").expect_err("syntax");
    let shown = error.to_string();
    assert!(matches!(error, PolicyError::Syntax { .. }), "{shown}");
    assert!(
        shown.starts_with("policy org.cedar is not valid Cedar:"),
        "{shown}"
    );
    assert!(shown.contains("org.cedar:4:"), "{shown}");
}

#[test]
fn ids_duplicates_and_templates() {
    // Un-annotated policies are named after their source and line.
    let policy = cedar("\n\npermit (principal, action, resource)\nwhen { principal.email == context.route.owner };\n@id(\"x\") forbid (principal, action, resource) when { context.time < 0 };");
    assert_eq!(policy.ids(), ["test.cedar:3", "x"]);
    let engine = Engine::new(policy, None);
    assert_allowed(&decide(&engine, OWNER, &request("ping")), &["test.cedar:3"]);

    let error = Policy::from_cedar_text(
        "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);",
        "dup.cedar",
    )
    .expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        "dup.cedar:2: policy id \"a\" is used twice (first at line 1)"
    );

    let error = Policy::from_cedar_text(
        "\npermit (principal == ?principal, action, resource);",
        "t.cedar",
    )
    .expect_err("template");
    assert!(
        matches!(error, PolicyError::Template { line: 2, .. }),
        "{error}"
    );

    // Empty text: nothing is permitted.
    let engine = Engine::new(cedar(""), None);
    assert_denied(&decide(&engine, OWNER, &request("ping")), &[NO_PERMIT]);
}

#[test]
fn flags_compile_to_inspectable_cedar() {
    let policy = Policy::from_flags(
        &["bob@example.com".to_owned(), " @corp.com ".to_owned()],
        Some(&["read_query".to_owned(), "we\"ird\\na\nme ü".to_owned()]),
        true,
    )
    .expect("flags");
    assert_eq!(policy.source_name(), "flags");
    assert_eq!(
        policy.ids(),
        [
            "owner",
            "allow-bob@example.com",
            "allow-@corp.com",
            "tools",
            "read-only-sql",
            "read-only-no-sql",
            "read-only-tools",
            "read-only-functions"
        ]
    );
    let text = policy.cedar_text();
    assert!(
        text.contains("principal.email == context.route.owner"),
        "{text}"
    );
    // The text loads again by itself.
    let again = Policy::from_cedar_text(text, "copy.cedar").expect("reload");
    assert_eq!(again.ids(), policy.ids());

    // An odd tool name survives quoting.
    let engine = flags(&[], Some(&["we\"ird\\na\nme ü"]), false);
    assert!(decide(&engine, OWNER, &call("we\"ird\\na\nme ü", json!({}))).allowed);
    assert!(!decide(&engine, OWNER, &call("we\"ird", json!({}))).allowed);
}

#[test]
fn bad_flags_are_refused() {
    for (allow, tools) in [
        (vec!["bob"], None),
        (vec!["@"], None),
        (vec!["@a@b"], None),
        (vec!["bob @x.com"], None),
        (vec![], Some(vec![""])),
    ] {
        let allow: Vec<String> = allow.into_iter().map(str::to_owned).collect();
        let tools: Option<Vec<String>> = tools.map(|t| t.into_iter().map(str::to_owned).collect());
        let error = Policy::from_flags(&allow, tools.as_deref(), false).expect_err("refused");
        assert!(matches!(error, PolicyError::Flag { .. }), "{error}");
        assert!(error.to_string().starts_with("invalid "), "{error}");
    }
}

#[test]
fn line_and_column_count_characters() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ü\nüx", 5), (2, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
}

// ----------------------------------------------------------- the context ---

#[test]
fn context_fields_are_usable() {
    let groups = ["ops".to_owned()];
    let policy = cedar(
        r#"
        @id("ops") permit (principal in Group::"ops", action == Action::"ping", resource in Route::"crm")
        when { context.client.name == "ChatGPT" && context.client_id == "client-1" && context.route.name == "crm" };
        @id("args") permit (principal, action == Action::"call_tool", resource)
        when {
          context has tool && context.tool == "describe_table" && resource.route.owner == "alice@example.com" &&
          context.arguments.contains({name: "table_name", value: "Users"}) &&
          context.arguments.contains({name: "limit", value: "5"}) &&
          context.arguments_json like "*\"table_name\":\"users\"*"
        };
        @id("sql") permit (principal, action == Action::"call_tool", resource)
        when {
          context.has_sql && context.sql.parsed && context.sql.kinds == ["select"] &&
          context.sql.tables.contains("main.t") && context.sql.table_names.contains("t") &&
          context.sql.table_list == ",main.t,u,t," && context.sql.functions.contains("count") &&
          context.time == 1780272000 && context.now == datetime("2026-06-01")
        };
        @id("prompt") permit (principal, action == Action::"get_prompt", resource)
        when { context has target && context.target == "mcp-demo" && context.method == "prompts/get" };
        "#,
    );
    let engine = Engine::new(policy, None);
    let mut ops = caller("x@y.z");
    ops.groups = &groups;
    assert_allowed(&decide_as(&engine, ops, &request("ping")), &["ops"]);
    assert_denied(&decide(&engine, "x@y.z", &request("ping")), &[NO_PERMIT]);
    assert_allowed(
        &decide(
            &engine,
            "x@y.z",
            &call("describe_table", json!({"table_name": "Users", "limit": 5})),
        ),
        &["args"],
    );
    assert_allowed(
        &decide(
            &engine,
            "x@y.z",
            &sql_call("read_query", "SELECT count(*) FROM main.t JOIN u"),
        ),
        &["sql"],
    );
    let prompt = message(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get",
        "params": {"name": "mcp-demo"}}));
    assert_allowed(&decide(&engine, "x@y.z", &prompt), &["prompt"]);
}

#[test]
fn cached_entities_never_mix_callers() {
    // Entities are cached per caller, route, action and tool; every input
    // must reach the decision.
    let policy = cedar(
        r#"@id("ops") permit (principal in Group::"ops", action, resource)
           when { context.client.name == "ChatGPT" && context.route.owner == "alice@example.com" };
           @id("domain") permit (principal, action == Action::"call_tool", resource == Tool::"t")
           when { principal.domain == "corp.com" && resource.route.name == "crm" };"#,
    );
    let engine = Engine::new(policy, None);
    let ops = ["ops".to_owned()];
    let other = ["other".to_owned()];
    for _ in 0..2 {
        let mut who = caller("x@example.com");
        who.groups = &ops;
        assert!(decide_as(&engine, who, &request("ping")).allowed);
        who.groups = &other;
        assert!(!decide_as(&engine, who, &request("ping")).allowed);
        who.groups = &[];
        assert!(!decide_as(&engine, who, &request("ping")).allowed);
        who.groups = &ops;
        who.client_name = Some("Claude");
        assert!(!decide_as(&engine, who, &request("ping")).allowed);
        who.client_name = None;
        assert!(!decide_as(&engine, who, &request("ping")).allowed);
        who.client_name = Some("ChatGPT");
        who.route_owner = "bob@example.com";
        assert!(!decide_as(&engine, who, &request("ping")).allowed);

        let corp = caller("y@corp.com");
        assert!(decide_as(&engine, corp, &call("t", json!({}))).allowed);
        assert!(!decide_as(&engine, corp, &call("u", json!({}))).allowed);
        assert!(!decide_as(&engine, corp, &request("ping")).allowed);
        let mut elsewhere = corp;
        elsewhere.route = "billing";
        assert!(!decide_as(&engine, elsewhere, &call("t", json!({}))).allowed);
    }
}

// -------------------------------------------------------------- listing ---

fn all_tools() -> Vec<String> {
    SQLITE_TOOLS.iter().map(|t| t.to_string()).collect()
}

#[test]
fn visible_tools_filters_the_list() {
    let tools = all_tools();
    let open = flags(&["bob@example.com"], None, false);
    assert_eq!(open.visible_tools(&caller(OWNER), &tools), tools);
    assert_eq!(
        open.visible_tools(&caller("bob@example.com"), &tools),
        tools
    );
    assert!(open
        .visible_tools(&caller("eve@example.com"), &tools)
        .is_empty());

    let restricted = flags(
        &[],
        Some(&["list_tables", "write_query", "read_query"]),
        false,
    );
    assert_eq!(
        restricted.visible_tools(&caller(OWNER), &tools),
        ["read_query", "write_query", "list_tables"]
    );

    // Read-only: the read tools stay visible although listing has no SQL.
    let read_only = flags(&[], None, true);
    assert_eq!(
        read_only.visible_tools(&caller(OWNER), &tools),
        ["read_query", "list_tables", "describe_table"]
    );
    assert!(read_only.tool_visible(&caller(OWNER), "read_query"));
    assert!(!read_only.tool_visible(&caller(OWNER), "write_query"));
    assert!(!read_only.tool_visible(&caller("eve@example.com"), "read_query"));
    let both = flags(&[], Some(&["read_query", "write_query"]), true);
    assert_eq!(both.visible_tools(&caller(OWNER), &tools), ["read_query"]);

    // Under an org guardrail that judges content, nothing is hidden.
    let org = Policy::from_cedar_text(ORG_NO_ATTACH, "org").expect("org");
    let guarded = Engine::new(
        Policy::from_flags(&[], None, false).expect("owner"),
        Some(org),
    );
    assert_eq!(guarded.visible_tools(&caller(OWNER), &tools), tools);
}

// ------------------------------------------------------------- examples ---

#[test]
fn example_owner_only() {
    let engine = Engine::new(
        Policy::from_cedar_text(OWNER_ONLY, "owner-only.cedar").expect("loads"),
        None,
    );
    for message in every_action() {
        assert_allowed(&decide(&engine, OWNER, &message), &["owner"]);
        assert_denied(&decide(&engine, "bob@example.com", &message), &[NO_PERMIT]);
    }
    assert_denied(
        &decide(&engine, OWNER, &sql_call("write_query", "SELEC")),
        &[UNPARSED_SQL],
    );
    assert_eq!(
        engine.visible_tools(&caller(OWNER), &all_tools()),
        all_tools()
    );
    assert!(engine
        .visible_tools(&caller("bob@example.com"), &all_tools())
        .is_empty());
}

#[test]
fn example_share_read_only() {
    let engine = Engine::new(
        Policy::from_cedar_text(SHARE_READ_ONLY, "share-read-only.cedar").expect("loads"),
        None,
    );
    const BOB: &str = "bob@example.com";
    // The owner keeps everything.
    assert_allowed(
        &decide(&engine, OWNER, &sql_call("write_query", "DELETE FROM t")),
        &["owner"],
    );
    // Bob connects, lists and reads.
    for method in [
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "prompts/list",
    ] {
        assert_allowed(&decide(&engine, BOB, &request(method)), &["bob-connect"]);
    }
    assert_allowed(
        &decide(
            &engine,
            BOB,
            &message(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
        ),
        &["bob-connect"],
    );
    assert_allowed(
        &decide(
            &engine,
            BOB,
            &sql_call("read_query", "SELECT * FROM customers"),
        ),
        &["bob-read-tools"],
    );
    assert_allowed(
        &decide(
            &engine,
            BOB,
            &call("describe_table", json!({"table_name": "customers"})),
        ),
        &["bob-read-tools"],
    );
    // ... but writes nothing, whatever the spelling.
    assert_denied(
        &decide(
            &engine,
            BOB,
            &sql_call("read_query", "WITH x AS (SELECT 1) DELETE FROM customers"),
        ),
        &["bob-read-only-sql"],
    );
    assert_denied(
        &decide(
            &engine,
            BOB,
            &sql_call("read_query", "SELECT writefile('/tmp/x', 'y')"),
        ),
        &["bob-read-only-sql"],
    );
    assert_denied(
        &decide(&engine, BOB, &sql_call("write_query", "SELECT 1")),
        &[NO_PERMIT],
    );
    assert_denied(
        &decide(
            &engine,
            BOB,
            &call("append_insight", json!({"insight": "x"})),
        ),
        &[NO_PERMIT],
    );
    // Not resources or prompts, and only on route "crm".
    assert_denied(&decide(&engine, BOB, &read_resource()), &[NO_PERMIT]);
    let mut other_route = caller(BOB);
    other_route.route = "billing";
    assert_denied(
        &decide_as(&engine, other_route, &request("ping")),
        &[NO_PERMIT],
    );
    assert_denied(
        &decide_as(&engine, other_route, &sql_call("read_query", "SELECT 1")),
        &[NO_PERMIT],
    );
    // Until 2027-01-01.
    let mut later = caller(BOB);
    later.time = at(JAN_2027);
    assert_denied(&decide_as(&engine, later, &request("ping")), &[NO_PERMIT]);
    assert_denied(
        &decide_as(&engine, later, &sql_call("read_query", "SELECT 1")),
        &[NO_PERMIT],
    );
    // Bob sees the read tools, until the date.
    assert_eq!(
        engine.visible_tools(&caller(BOB), &all_tools()),
        ["read_query", "list_tables", "describe_table"]
    );
    assert!(engine.visible_tools(&later, &all_tools()).is_empty());
    assert!(engine
        .visible_tools(&caller("eve@example.com"), &all_tools())
        .is_empty());
}

#[test]
fn example_org_no_attach() {
    let org = Policy::from_cedar_text(ORG_NO_ATTACH, "org-no-attach.cedar").expect("loads");
    let owner = Policy::from_flags(&["bob@example.com".to_owned()], None, false).expect("owner");
    let engine = Engine::new(owner, Some(org));
    for who in [OWNER, "bob@example.com"] {
        for (sql, rule) in [
            ("ATTACH DATABASE '/etc/x.db' AS x", "org/no-attach"),
            ("attach 'x' as y", "org/no-attach"),
            (
                "SELECT load_extension('/tmp/evil.so')",
                "org/no-load-extension",
            ),
            ("SELECT readfile('/etc/passwd')", "org/no-load-extension"),
            ("SELECT * FROM secrets", "org/no-secret-tables"),
            ("SELECT * FROM main.\"API_Secrets\"", "org/no-secret-tables"),
            ("DELETE FROM user_passwords", "org/no-secret-tables"),
            (
                "SELECT a FROM t JOIN credentials_v2 c ON 1",
                "org/no-secret-tables",
            ),
        ] {
            assert_denied(&decide(&engine, who, &sql_call("read_query", sql)), &[rule]);
        }
        for table in ["secrets", "SECRETS", "Passwords"] {
            assert_denied(
                &decide(
                    &engine,
                    who,
                    &call("describe_table", json!({"table_name": table})),
                ),
                &["org/no-secret-tables"],
            );
        }
        // Everything else is left to the owner's policy.
        let d = decide(
            &engine,
            who,
            &sql_call("write_query", "INSERT INTO t VALUES (1)"),
        );
        assert!(d.allowed, "{d:?}");
        assert!(
            decide(
                &engine,
                who,
                &call("describe_table", json!({"table_name": "customers"}))
            )
            .allowed
        );
        assert!(decide(&engine, who, &request("tools/list")).allowed);
    }
    assert_denied(
        &decide(&engine, "eve@example.com", &request("ping")),
        &[NO_PERMIT],
    );
}

#[test]
fn decision_messages_name_the_rule() {
    let engine = flags(&[], None, true);
    let d = decide(&engine, OWNER, &sql_call("read_query", "DELETE FROM t"));
    assert_eq!(d.message(), "denied by policy read-only-sql");
    let d = decide(&engine, OWNER, &sql_call("read_query", "SELECT 1"));
    assert_eq!(d.message(), "allowed by policy owner");
    let d = decide(&engine, OWNER, &sql_call("write_query", "DELETE FROM t"));
    assert_eq!(
        d.message(),
        "denied by policies read-only-sql, read-only-tools"
    );
    let json = serde_json::to_value(&d).expect("serialize");
    assert_eq!(
        json["policies"],
        json!(["read-only-sql", "read-only-tools"])
    );
}

// ----------------------------------------------------------------- cost ---

/// The cost of one decision for a typical SQL tool call, owner flags with
/// --allow/--read-only plus an org guardrail. Prints; asserts nothing about
/// time. `cargo test --release -p drawbridge-policy engine::tests::decision_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn decision_cost() {
    let owner = Policy::from_flags(
        &["bob@example.com".to_owned(), "@corp.com".to_owned()],
        None,
        true,
    )
    .expect("owner");
    let org = Policy::from_cedar_text(ORG_NO_ATTACH, "org").expect("org");
    let engine = Engine::new(owner.clone(), Some(org));
    let owner_only = Engine::new(owner, None);
    let message = sql_call(
        "read_query",
        "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
         WHERE o.created_at > '2026-01-01' GROUP BY c.name ORDER BY 2 DESC LIMIT 10",
    );
    let facts = classify(message.sql_argument().expect("sql"));
    let groups = ["ops".to_owned(), "data".to_owned()];
    let mut who = caller("bob@example.com");
    who.groups = &groups;
    let request = Request {
        caller: who,
        message: &message,
        sql: Some(&facts),
    };
    for (name, engine) in [("owner+org", &engine), ("owner only", &owner_only)] {
        assert!(engine.decide(&request).allowed);
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(engine.decide(std::hint::black_box(&request)));
        }
        let per = start.elapsed() / n;
        println!("decide ({name}): {per:?} per decision");
    }
    let start = std::time::Instant::now();
    let n = 2_000u32;
    let tools = all_tools();
    for _ in 0..n {
        std::hint::black_box(engine.visible_tools(&who, &tools));
    }
    println!(
        "visible_tools (6 tools, owner+org): {:?} per list",
        start.elapsed() / n
    );
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(classify(message.sql_argument().expect("sql")));
    }
    println!("sql::classify of the same SQL: {:?}", start.elapsed() / n);
}

/// Found by the `jsonrpc` fuzz target: a `tools/call` sent without an id is
/// a notification in JSON-RPC terms, but a server may still run it, so it is
/// judged as `call_tool` (read-only and --tools apply), not as `notify`.
#[test]
fn a_request_method_without_an_id_is_judged_by_its_method() {
    let engine = flags(&[], Some(&["read_query"]), true);
    let sneaky = message(json!({"jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "read_query", "arguments": {"query": "WITH x AS (SELECT 1) DELETE FROM orders"}}}));
    assert_eq!(sneaky.kind, MessageKind::Notification);
    assert_denied(&decide(&engine, OWNER, &sneaky), &["read-only-sql"]);
    let other_tool = message(json!({"jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "write_query", "arguments": {"query": "SELECT 1"}}}));
    assert!(!decide(&engine, OWNER, &other_tool).allowed);
    // Real notifications stay plumbing.
    let note = message(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    assert!(decide(&engine, OWNER, &note).allowed);
}

// ---- grants (agent share) ----------------------------------------------------

fn grant(id: &str, with: &str, tools: Option<&[&str]>, read_only: bool) -> Grant {
    Grant {
        id: id.to_owned(),
        grantee: Grantee::parse(with).expect("grantee"),
        tools: tools.map(|t| t.iter().map(|s| s.to_string()).collect()),
        resources: Vec::new(),
        prompts: Vec::new(),
        read_only,
        expires_at: None,
    }
}

fn read_uri(uri: &str) -> Message {
    message(json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}}))
}

fn get_prompt(name: &str) -> Message {
    message(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": name}}))
}

#[test]
fn a_grant_reads_only_the_resources_and_gets_only_the_prompts_it_names() {
    let owner = Policy::from_flags(&[], None, false).expect("owner only");
    let tools_only = grant("a1", "bob@example.com", Some(&["read_query"]), true);
    let mut named = grant("b2", "carol@example.com", Some(&[]), false);
    named.resources = vec!["memo://insights".to_owned(), "file:///docs/*".to_owned()];
    named.prompts = vec!["mcp-demo".to_owned()];
    let mut everything = grant("c3", "dave@example.com", None, false);
    everything.resources = vec!["*".to_owned()];
    everything.prompts = vec!["*".to_owned()];
    let engine = Engine::new(
        owner
            .with_grants(&[tools_only, named, everything])
            .expect("with grants"),
        None,
    );
    // A tools-only grant: no resource, no prompt, and none listed.
    let bob = "bob@example.com";
    assert_denied(
        &decide(&engine, bob, &read_uri("memo://insights")),
        &[NO_PERMIT],
    );
    assert_denied(&decide(&engine, bob, &get_prompt("mcp-demo")), &[NO_PERMIT]);
    assert!(decide(&engine, bob, &request("resources/list")).allowed);
    assert!(!engine.resource_visible(&caller(bob), "memo://insights"));
    assert!(!engine.prompt_visible(&caller(bob), "mcp-demo"));
    // What a grant names, exactly or by pattern, and nothing else.
    let carol = "carol@example.com";
    assert_allowed(
        &decide(&engine, carol, &read_uri("memo://insights")),
        &["grant-b2-resources"],
    );
    assert!(decide(&engine, carol, &read_uri("file:///docs/a/b.md")).allowed);
    assert!(!decide(&engine, carol, &read_uri("memo://insights2")).allowed);
    assert!(!decide(&engine, carol, &read_uri("file:///etc/passwd")).allowed);
    assert_allowed(
        &decide(&engine, carol, &get_prompt("mcp-demo")),
        &["grant-b2-prompts"],
    );
    assert!(!decide(&engine, carol, &get_prompt("other")).allowed);
    assert!(engine.resource_visible(&caller(carol), "memo://insights"));
    assert!(engine.resource_visible(&caller(carol), "file:///docs/{path}"));
    assert!(!engine.resource_visible(&caller(carol), "memo://{name}"));
    // `*`: everything.
    let dave = "dave@example.com";
    assert!(decide(&engine, dave, &read_uri("anything://at/all")).allowed);
    assert!(decide(&engine, dave, &get_prompt("any")).allowed);
    // The owner keeps everything.
    assert!(decide(&engine, OWNER, &read_uri("memo://insights")).allowed);
    assert!(engine.prompt_visible(&caller(OWNER), "mcp-demo"));
    // Quotes and backslashes stay inside the pattern.
    let mut odd = grant("d4", "erin@example.com", Some(&[]), false);
    odd.resources = vec![r#"x" || true || "\"#.to_owned()];
    let engine = Engine::new(
        Policy::from_flags(&[], None, false)
            .expect("owner")
            .with_grants(&[odd])
            .expect("an odd pattern is still one pattern"),
        None,
    );
    assert!(!decide(&engine, "erin@example.com", &read_uri("memo://insights")).allowed);
    assert!(
        decide(
            &engine,
            "erin@example.com",
            &read_uri(r#"x" || true || "\"#)
        )
        .allowed
    );
    // Empty patterns are refused.
    let mut empty = grant("e5", "bob@example.com", None, false);
    empty.prompts = vec![String::new()];
    assert!(empty.check().is_err());
}

#[test]
fn owner_flags_name_the_only_resources_and_prompts() {
    let memo = ["memo://*".to_owned()];
    let owner = Policy::from_owner_flags(&[], None, Some(&memo), Some(&[]), false).expect("flags");
    let engine = Engine::new(owner, None);
    assert!(decide(&engine, OWNER, &read_uri("memo://insights")).allowed);
    assert_denied(
        &decide(&engine, OWNER, &read_uri("file:///etc/passwd")),
        &["resources"],
    );
    assert_denied(
        &decide(&engine, OWNER, &get_prompt("mcp-demo")),
        &["prompts"],
    );
    assert!(!engine.prompt_visible(&caller(OWNER), "mcp-demo"));
    assert!(engine.resource_visible(&caller(OWNER), "memo://{name}"));
    // No flags: the owner reads and gets everything (as before).
    let engine = Engine::new(Policy::from_flags(&[], None, false).expect("flags"), None);
    assert!(decide(&engine, OWNER, &read_uri("file:///etc/passwd")).allowed);
    assert!(decide(&engine, OWNER, &get_prompt("mcp-demo")).allowed);
    assert!(Policy::from_owner_flags(&[], None, Some(&[String::new()]), None, false).is_err());
}

#[test]
fn a_grant_permits_its_grantee_exactly_what_it_names() {
    let owner = Policy::from_flags(&[], None, false).expect("owner only");
    let g = grant(
        "a1",
        "Bob@Example.com",
        Some(&["read_query", "write_query"]),
        true,
    );
    let engine = Engine::new(owner.with_grants(&[g]).expect("with grant"), None);
    let bob = "bob@example.com";
    // Plumbing and lists.
    assert!(decide(&engine, bob, &request("initialize")).allowed);
    assert!(decide(&engine, bob, &request("tools/list")).allowed);
    // A granted tool, read-only.
    let read = decide(&engine, bob, &sql_call("read_query", "SELECT 1"));
    assert!(read.allowed, "{read:?}");
    assert_eq!(read.policies, ["grant-a1-tools"]);
    let write = decide(&engine, bob, &sql_call("read_query", "DELETE FROM t"));
    assert_eq!(
        (write.allowed, write.policies.as_slice()),
        (false, [NO_PERMIT.to_owned()].as_slice())
    );
    // Listed but not a read tool; a read tool not listed.
    assert!(!decide(&engine, bob, &sql_call("write_query", "SELECT 1")).allowed);
    assert!(!decide(&engine, bob, &call("list_tables", json!({}))).allowed);
    assert_eq!(
        engine.visible_tools(&caller(bob), &SQLITE_TOOLS.map(String::from)),
        ["read_query"]
    );
    // Somebody else gets nothing; the owner keeps everything.
    assert!(!decide(&engine, "carol@example.com", &request("initialize")).allowed);
    assert!(decide(&engine, OWNER, &sql_call("write_query", "DELETE FROM t")).allowed);
}

#[test]
fn a_domain_grant_and_expiry_and_the_owners_forbids() {
    // The owner's --tools still binds the grantee.
    let owner = Policy::from_flags(&[], Some(&["read_query".to_owned()]), false).expect("flags");
    let mut g = grant("b2", "@example.com", None, false);
    g.expires_at = Some(JUNE_2026 as i64 + 60);
    let engine = Engine::new(owner.with_grants(&[g]).expect("with grant"), None);
    let c = caller("dave@example.com");
    assert!(decide_as(&engine, c, &sql_call("read_query", "DELETE FROM t")).allowed);
    let other = decide_as(&engine, c, &call("list_tables", json!({})));
    assert_eq!(other.policies, ["tools"]);
    // Not a subdomain, and not after the expiry.
    assert!(!decide(&engine, "eve@sub.example.com", &request("initialize")).allowed);
    let later = Caller {
        time: at(JUNE_2026 + 61),
        ..c
    };
    assert!(!decide_as(&engine, later, &request("initialize")).allowed);
    // No tool at all: plumbing only.
    let none = grant("c3", "bob@example.com", Some(&[]), false);
    let engine = Engine::new(
        Policy::from_flags(&[], None, false)
            .expect("owner")
            .with_grants(&[none])
            .expect("with grant"),
        None,
    );
    assert!(decide(&engine, "bob@example.com", &request("ping")).allowed);
    assert!(
        !decide(
            &engine,
            "bob@example.com",
            &sql_call("read_query", "SELECT 1")
        )
        .allowed
    );
    // Bad input is refused.
    assert!(Grantee::parse("bob").is_err());
    assert!(Grantee::parse("@").is_err());
    assert!(grant("x-y", "bob@example.com", None, false)
        .check()
        .is_err());
}

#[test]
fn now_is_in_the_context_whenever_a_layer_can_read_it() {
    // The engine leaves `context.now` out when no policy mentions it; every
    // way of reading it must keep it in, in either layer.
    let uses_now = |p: &Policy| p.reads.has(Reads::NOW);
    assert!(!uses_now(
        &Policy::from_flags(&[], None, true).expect("flags")
    ));
    assert!(uses_now(&cedar(SHARE_READ_ONLY)));
    let owner = || Policy::from_flags(&[], None, false).expect("flags");
    for (id, org) in [
        (
            "dot",
            r#"@id("dot") forbid (principal, action, resource) when { context.now >= datetime("2026-01-01") };"#,
        ),
        (
            "index",
            r#"@id("index") forbid (principal, action, resource) when { context["now"] >= datetime("2026-01-01") };"#,
        ),
        (
            "has",
            r#"@id("has") forbid (principal, action, resource) when { context has now };"#,
        ),
    ] {
        let org = cedar(org);
        assert!(uses_now(&org), "{id}");
        let engine = Engine::new(owner(), Some(org));
        assert_denied(
            &decide(&engine, OWNER, &request("ping")),
            &[&format!("{ORG_PREFIX}{id}")],
        );
    }
    // Before the date, the same guardrail lets the owner through: `now` is
    // the caller's time, not a constant.
    let engine = Engine::new(
        owner(),
        Some(cedar(
            r#"@id("later") forbid (principal, action, resource) when { context.now >= datetime("2027-01-01") };"#,
        )),
    );
    assert_allowed(&decide(&engine, OWNER, &request("ping")), &["owner"]);
}

/// The same policy, deciding with every attribute of the context built.
fn reading_everything(policy: &Policy) -> Policy {
    let mut policy = policy.clone();
    policy.reads = Reads::ALL;
    policy
}

#[test]
fn context_holds_what_policies_read_and_decides_like_the_full_one() {
    // Guardrails reading one attribute each, in each way a policy can.
    let guards = [
        (Reads::METHOD, r#"context.method == "ping""#),
        (
            Reads::TOOL,
            r#"context has tool && context.tool == "write_query""#,
        ),
        (
            Reads::TARGET,
            r#"context has target && context.target like "*insights""#,
        ),
        (
            Reads::ARGUMENTS,
            r#"context.arguments.contains({name: "topic", value: "x"})"#,
        ),
        (
            Reads::ARGUMENTS_JSON,
            r#"context.arguments_json like "*drop*""#,
        ),
        (
            Reads::HAS_SQL.union(Reads::SQL),
            r#"context.has_sql && context.sql.tables.contains("main.t")"#,
        ),
        (Reads::LISTING, "context.listing"),
        (Reads::CLIENT, r#"context.client.name == "Evil""#),
        (Reads::CLIENT_ID, r#"context["client_id"] == "client-2""#),
        (Reads::ROUTE, "context.route.owner == principal.email"),
        (Reads::TIME, "context.time > 1780272000"),
        (
            Reads::NOW,
            r#"context.now > datetime("2026-06-01T00:00:00Z")"#,
        ),
        (
            Reads::SQL,
            "context has sql.parsed && context.sql.read_only",
        ),
    ];
    let mut orgs = Vec::new();
    for (i, (reads, condition)) in guards.iter().enumerate() {
        let org = cedar(&format!(
            "@id(\"g{i}\") forbid (principal, action, resource) when {{ {condition} }};"
        ));
        assert_eq!(org.reads, *reads, "{condition}");
        orgs.push(org);
    }
    // What the flags and the examples read.
    let owner = Policy::from_flags(&[], None, false).expect("flags");
    assert_eq!(owner.reads, Reads::ROUTE);
    assert!(!owner.reads.has(Reads::ARGUMENTS));
    let read_only = Policy::from_flags(&["@example.com".to_owned()], None, true).expect("flags");
    assert!(read_only
        .reads
        .has(Reads::SQL.union(Reads::HAS_SQL).union(Reads::LISTING)));
    assert!(!read_only.reads.has(Reads::ARGUMENTS_JSON));

    let owners = [
        owner,
        read_only,
        Policy::from_flags(&[], Some(&["read_query".to_owned()]), false).expect("flags"),
        cedar(OWNER_ONLY),
        cedar(SHARE_READ_ONLY),
    ];
    let mut messages = every_action();
    messages.push(sql_call("read_query", "SELECT * FROM main.t"));
    messages.push(sql_call("write_query", "DROP TABLE t"));
    messages.push(sql_call("read_query", "SELECT load_extension('x')"));
    messages.push(call("weird", json!({"n": 1, "o": {"a": [1]}, "s": "DROP"})));
    let callers = [
        caller(OWNER),
        caller("bob@example.com"),
        Caller {
            client_id: "client-2",
            client_name: Some("Evil"),
            time: at(JAN_2027),
            ..caller("carol@example.com")
        },
    ];
    let mut compared = 0;
    for owner in &owners {
        for org in std::iter::once(None).chain(orgs.iter().map(Some)) {
            let trimmed = Engine::new(owner.clone(), org.cloned());
            let full = Engine::new(reading_everything(owner), org.map(reading_everything));
            for who in &callers {
                for message in &messages {
                    assert_eq!(
                        decide_as(&trimmed, *who, message),
                        decide_as(&full, *who, message),
                        "{message:?} by {} under {org:?}",
                        who.email
                    );
                    compared += 1;
                }
                for tool in SQLITE_TOOLS {
                    assert_eq!(
                        trimmed.tool_visible(who, tool),
                        full.tool_visible(who, tool)
                    );
                }
            }
        }
    }
    assert!(compared > 1000);
    // Every guardrail denies something: the attribute it reads is there.
    for (i, org) in orgs.iter().enumerate() {
        let engine = Engine::new(owners[1].clone(), Some(org.clone()));
        let denied = callers.iter().any(|who| {
            messages.iter().any(|m| {
                decide_as(&engine, *who, m)
                    .policies
                    .contains(&format!("org/g{i}"))
            })
        }) || callers
            .iter()
            .any(|who| !engine.tool_visible(who, "read_query"));
        assert!(denied, "guardrail g{i} never applied");
    }
}
