//! A state directory of the relay before versioned migrations (commit
//! 9b80a37) upgrades in place, and every row in it is still usable.
//!
//! `fixtures/relay-9b80a37.sql` is the dump of a `relay.db` made by that
//! commit's relay (`relay token create`, `relay user add`), with the rows
//! that need a running relay (route, grant, pin, groups, OAuth client,
//! consent and tokens) written with its schema.

use std::path::PathBuf;

use store::sqlite::SqliteStore;
use store::{
    Change, Changes, Grants, OAuth, OAuthTokenKind, Pins, RefreshOutcome, RefreshVerdict,
    TokenKind, TokenTtl, Tokens, Users,
};

const AGENT_SECRET: &str = "dbat_2cab5ccd1b35736f9477a21244898aec3870b77fa404f53200eff8cbf1912511";
const CLIENT_SECRET: &str = "dbct_c231461e543cc6cbb464caecb3ba5d201bb9f7733196aac1505e057edd722cff";
const ACCESS: &str = "dboa_1111111111111111111111111111111111111111111111111111111111111111";
const REFRESH: &str = "dbor_2222222222222222222222222222222222222222222222222222222222222222";

fn state_dir(sql: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbr-migrate-{}", store::token::random_hex(6)));
    std::fs::create_dir_all(&dir).expect("dir");
    let conn = rusqlite::Connection::open(dir.join("relay.db")).expect("open");
    conn.execute_batch(sql).expect("old database");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_relay_before_migrations_upgrades_in_place() {
    let dir = state_dir(include_str!("fixtures/relay-9b80a37.sql"));
    let s = SqliteStore::open(&dir).expect("open upgrades");
    assert_eq!(s.schema_versions().expect("versions"), [1, 2, 3, 4, 5, 6]);
    let now = store::now();

    // Agent and client tokens.
    let agent = s
        .token_by_secret(AGENT_SECRET)
        .await
        .expect("lookup")
        .expect("agent token");
    assert_eq!(
        (agent.kind, agent.owner.as_str(), agent.name.as_str()),
        (TokenKind::Agent, "alice@example.com", "laptop")
    );
    assert_eq!(agent.check(now), Ok(()));
    let client = s
        .token_by_secret(CLIENT_SECRET)
        .await
        .expect("lookup")
        .expect("client token");
    assert_eq!(
        (client.kind, client.name.as_str()),
        (TokenKind::Client, "cli")
    );
    assert_eq!(s.list_tokens().await.expect("list").len(), 2);

    // The route, its grant and its pin.
    assert_eq!(
        s.route_owner("db").await.expect("owner").as_deref(),
        Some("alice@example.com")
    );
    let grants = s.route_grants("db").await.expect("grants");
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (
            grants[0].grantee.as_str(),
            grants[0].tools.clone(),
            grants[0].resources.clone(),
            grants[0].read_only
        ),
        (
            "bob@example.com",
            Some(vec!["read_query".to_owned()]),
            vec!["memo://*".to_owned()],
            true
        )
    );
    assert_eq!(
        s.owner_grants("alice@example.com", None)
            .await
            .expect("owner grants"),
        grants
    );
    let pin = s
        .tool_pin("db", "read_query")
        .await
        .expect("pin")
        .expect("pinned");
    assert_eq!(pin.hash, "aaaa");
    assert_eq!(pin.pending.map(|p| p.hash).as_deref(), Some("bbbb"));
    assert_eq!(
        s.pending_tools("db").await.expect("pending"),
        ["read_query"]
    );

    // The user, their password and groups.
    let hash = s
        .user_password_hash("bob@example.com")
        .await
        .expect("hash")
        .expect("user");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(s.list_users().await.expect("users").len(), 1);
    assert_eq!(
        s.groups("bob@example.com").await.expect("groups"),
        ["data", "ops"]
    );

    // The OAuth client, consent and tokens.
    let c = s.client("client-1").await.expect("client").expect("some");
    assert_eq!(c.redirect_uris, ["http://127.0.0.1:3333/callback"]);
    assert_eq!(
        s.consent_scope("bob@example.com", "client-1", "db")
            .await
            .expect("consent")
            .as_deref(),
        Some("mcp")
    );
    let access = s
        .oauth_token(ACCESS)
        .await
        .expect("lookup")
        .expect("access");
    assert_eq!(access.kind, OAuthTokenKind::Access);
    assert_eq!(access.check(now), Ok(()));
    let ttl = TokenTtl {
        access: 60,
        refresh: 600,
    };
    let check: store::RefreshCheck = Box::new(|t| RefreshVerdict::Issue {
        scope: t.scope.clone(),
    });
    assert!(matches!(
        s.refresh(REFRESH, check, ttl).await.expect("refresh"),
        RefreshOutcome::Issued(_)
    ));

    // Writes after the upgrade reach the feed.
    let mut feed = s.changes();
    s.revoke_token(&agent.id).await.expect("revoke");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Some(Change::Token { id })) if id == agent.id => break,
            Ok(Some(_)) => {}
            other => panic!("no change for the revocation: {other:?}"),
        }
    }

    // Opened again (a restart, or another process): nothing to migrate.
    drop(s);
    let s = SqliteStore::open(&dir).expect("reopen");
    assert_eq!(s.schema_versions().expect("versions"), [1, 2, 3, 4, 5, 6]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn grants_of_an_older_relay_get_resources_and_prompts_by_what_they_shared() {
    // The table as the relay before grants named resources made it.
    let dir = state_dir(
        "CREATE TABLE route_grants (
            id TEXT PRIMARY KEY, route TEXT NOT NULL, grantee TEXT NOT NULL,
            tools TEXT, read_only INTEGER NOT NULL, created_by TEXT NOT NULL,
            created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER);
         INSERT INTO route_grants VALUES
            ('aa', 'db', 'b@x', '[\"read_query\"]', 1, 'a@x', 1, NULL, NULL),
            ('bb', 'db', '@y', NULL, 0, 'a@x', 2, NULL, NULL);",
    );
    let s = SqliteStore::open(&dir).expect("open migrates");
    let live = s.route_grants("db").await.expect("grants");
    let by_id = |id: &str| live.iter().find(|g| g.id == id).cloned().expect("grant");
    // Named tools: no resource, no prompt. Everything shared: all of them.
    assert_eq!(
        (by_id("aa").resources, by_id("aa").prompts),
        (vec![], vec![])
    );
    let all = vec!["*".to_owned()];
    assert_eq!(
        (by_id("bb").resources, by_id("bb").prompts),
        (all.clone(), all)
    );
    drop(s);
    // Opening again changes nothing.
    let s = SqliteStore::open(&dir).expect("open again");
    assert_eq!(s.route_grants("db").await.expect("grants"), live);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_database_of_a_newer_relay_is_refused() {
    let dir = state_dir(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                                         applied_at INTEGER NOT NULL);
         INSERT INTO schema_migrations VALUES (999, 'future', 0);",
    );
    let err = SqliteStore::open(&dir).err().expect("refused");
    assert!(
        err.to_string().contains("newer than this relay knows"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
