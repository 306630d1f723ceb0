//! The conformance suite every backend passes: each trait method, the
//! transactional flows (with races between two handles on one store, like
//! two processes) and the change feed. Nothing here knows a backend.
//!
//! A backend runs it with [`conformance_tests!`](crate::conformance_tests),
//! given an async function that makes a fresh, empty store and returns two
//! independent handles on it ([`Handles`]):
//!
//! ```ignore
//! async fn fresh() -> store::conformance::Handles { … }
//! store::conformance_tests!(fresh);
//! ```
//!
//! which makes one `#[tokio::test]` per case (see [`CASES`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    AuditFilter, Change, ChangeFeed, CodeRedemption, DevicePoll, Grant, NewGrant, OAuthClient,
    OAuthTokenKind, PendingSignIn, RefreshOutcome, RefreshVerdict, Refusal, Remembered, RouteClaim,
    ShippedEvent, SignInBounds, Store, StoreError, TokenKind, TokenRejection, TokenTtl,
};

/// Two handles on one fresh, empty store: separate connections (pools,
/// processes), so that races between them are real.
pub struct Handles {
    pub first: Arc<dyn Store>,
    pub second: Arc<dyn Store>,
    /// Kept until the case ends, then dropped (e.g. removes a temporary
    /// directory, stops a database server).
    pub guard: Box<dyn std::any::Any + Send>,
}

/// The names of the cases, in the order the macro runs them.
pub const CASES: &[&str] = &[
    "tokens_live_and_die",
    "routes_belong_to_their_first_owner_within_a_cap",
    "grants_live_until_revoked_and_go_with_their_route",
    "tool_pins_record_changes_once",
    "users_and_their_groups",
    "clients_consents_and_sessions",
    "device_codes_are_pending_until_decided_then_spent_once",
    "a_code_is_redeemed_once_and_a_replay_revokes_its_tokens",
    "a_refresh_token_rotates_once",
    "concurrent_device_polls_spend_the_code_once",
    "concurrent_code_redemptions_issue_once",
    "concurrent_refreshes_rotate_once",
    "concurrent_route_claims_have_one_winner_within_the_cap",
    "the_feed_reports_every_write_of_any_handle",
    "hooks_hear_a_write_before_it_returns",
    "the_store_answers_a_ping",
    "nodes_are_live_while_they_heartbeat_and_hold_agent_sessions",
    "mcp_sessions_name_their_agent_instance",
    "audit_events_are_stored_once_per_log_and_seq",
    "pending_sign_ins_are_taken_once_within_their_bounds",
    "concurrent_takes_of_a_pending_sign_in_have_one_winner",
    "a_secret_is_created_once_whoever_races",
    "a_lease_has_one_holder_until_it_expires",
];

/// One `#[tokio::test]` per case of the suite, each on a fresh store made
/// by `$fresh` (an async fn returning [`Handles`]).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh:path) => {
        $crate::conformance_tests!(@cases $fresh;
            tokens_live_and_die,
            routes_belong_to_their_first_owner_within_a_cap,
            grants_live_until_revoked_and_go_with_their_route,
            tool_pins_record_changes_once,
            users_and_their_groups,
            clients_consents_and_sessions,
            device_codes_are_pending_until_decided_then_spent_once,
            a_code_is_redeemed_once_and_a_replay_revokes_its_tokens,
            a_refresh_token_rotates_once,
            concurrent_device_polls_spend_the_code_once,
            concurrent_code_redemptions_issue_once,
            concurrent_refreshes_rotate_once,
            concurrent_route_claims_have_one_winner_within_the_cap,
            the_feed_reports_every_write_of_any_handle,
            hooks_hear_a_write_before_it_returns,
            the_store_answers_a_ping,
            nodes_are_live_while_they_heartbeat_and_hold_agent_sessions,
            mcp_sessions_name_their_agent_instance,
            audit_events_are_stored_once_per_log_and_seq,
            pending_sign_ins_are_taken_once_within_their_bounds,
            concurrent_takes_of_a_pending_sign_in_have_one_winner,
            a_secret_is_created_once_whoever_races,
            a_lease_has_one_holder_until_it_expires,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$case($fresh().await).await;
            }
        )*
    };
}

const TTL: TokenTtl = TokenTtl {
    access: 3600,
    refresh: 86400,
};

/// How many concurrent attempts a race test makes (half on each handle).
const RACERS: usize = 16;

fn grant(family: &str) -> Grant<'_> {
    Grant {
        family,
        client_id: "c1",
        email: "a@x",
        resource: "https://r/mcp/db",
        scope: "mcp",
    }
}

fn code(family: &str) -> crate::AuthCode {
    crate::AuthCode {
        family: family.into(),
        client_id: "c1".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        code_challenge: "x".into(),
        resource: "https://r/mcp/db".into(),
        email: "a@x".into(),
        scope: "mcp".into(),
        expires_at: crate::now() + 60,
    }
}

async fn verify(s: &dyn Store, presented: &str) -> Result<String, TokenRejection> {
    let r = s
        .token_by_secret(presented)
        .await
        .expect("lookup")
        .ok_or(TokenRejection::Unknown)?;
    r.check(crate::now())?;
    Ok(r.id)
}

async fn access(s: &dyn Store, presented: &str) -> Result<(), TokenRejection> {
    let t = s
        .oauth_token(presented)
        .await
        .expect("lookup")
        .filter(|t| t.kind == OAuthTokenKind::Access)
        .ok_or(TokenRejection::Unknown)?;
    t.check(crate::now())
}

pub async fn tokens_live_and_die(h: Handles) {
    let s = &*h.first;
    let (rec, secret) = s
        .create_token(TokenKind::Client, "a@x", "cli", None)
        .await
        .expect("create");
    assert_eq!(verify(s, secret.expose()).await, Ok(rec.id.clone()));
    assert_eq!(verify(s, "dbct_nope").await, Err(TokenRejection::Unknown));
    assert_eq!(s.token(&rec.id).await.expect("get"), Some(rec.clone()));
    assert_eq!(s.token("nope").await.expect("get"), None);
    s.touch_token(&rec.id, 1234).await.expect("touch");
    assert_eq!(
        h.second
            .token(&rec.id)
            .await
            .expect("get")
            .and_then(|r| r.last_used_at),
        Some(1234)
    );
    let (new, new_secret) = s
        .rotate_token(&rec.id, Duration::from_secs(3600), None)
        .await
        .expect("rotate");
    assert_eq!(
        (new.kind, new.owner.as_str(), new.name.as_str()),
        (TokenKind::Client, "a@x", "cli")
    );
    // Both valid during the grace period.
    assert!(verify(s, secret.expose()).await.is_ok());
    assert!(verify(s, new_secret.expose()).await.is_ok());
    assert_eq!(
        s.token(&rec.id)
            .await
            .expect("get")
            .expect("some")
            .replaced_by,
        Some(new.id.clone())
    );
    let revoked = h.second.revoke_token(&rec.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        verify(s, secret.expose()).await,
        Err(TokenRejection::Revoked)
    );
    assert!(matches!(
        s.revoke_token(&rec.id).await,
        Err(StoreError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        s.rotate_token(&rec.id, Duration::ZERO, None).await,
        Err(StoreError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        s.revoke_token("nope").await,
        Err(StoreError::NoSuchToken(_))
    ));
    // A zero grace expires the old token at once.
    s.rotate_token(&new.id, Duration::ZERO, Some(crate::now() + 60))
        .await
        .expect("rotate");
    assert_eq!(
        verify(s, new_secret.expose()).await,
        Err(TokenRejection::Expired)
    );
    let (agent, _) = s
        .create_token(TokenKind::Agent, "b@x", "laptop", Some(crate::now() + 60))
        .await
        .expect("create");
    let all = h.second.list_tokens().await.expect("list");
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].id, rec.id, "oldest first");
    assert_eq!(all[3], agent);
}

pub async fn routes_belong_to_their_first_owner_within_a_cap(h: Handles) {
    let s = &*h.first;
    assert_eq!(
        s.claim_route("a", "o@x", 2).await.expect("claim"),
        RouteClaim::Granted
    );
    assert_eq!(
        s.claim_route("b", "o@x", 2).await.expect("claim"),
        RouteClaim::Granted
    );
    assert_eq!(
        s.claim_route("c", "o@x", 2).await.expect("claim"),
        RouteClaim::TooMany { max: 2 }
    );
    // Routes already held still are; other owners are not affected.
    assert_eq!(
        s.claim_route("a", "o@x", 2).await.expect("claim"),
        RouteClaim::Granted
    );
    assert_eq!(
        h.second.claim_route("a", "p@x", 0).await.expect("claim"),
        RouteClaim::Taken {
            owner: "o@x".into()
        }
    );
    assert_eq!(
        s.claim_route("c", "p@x", 2).await.expect("claim"),
        RouteClaim::Granted
    );
    assert!(h.second.release_route("b").await.expect("release"));
    assert!(!s.release_route("b").await.expect("release again"));
    assert_eq!(
        s.claim_route("d", "o@x", 2).await.expect("claim"),
        RouteClaim::Granted
    );
    assert_eq!(
        s.route_owner("c").await.expect("owner").as_deref(),
        Some("p@x")
    );
    assert_eq!(s.route_owner("b").await.expect("owner"), None);
    assert_eq!(
        s.list_routes().await.expect("list"),
        [("a", "o@x"), ("c", "p@x"), ("d", "o@x")].map(|(n, o)| (n.to_owned(), o.to_owned()))
    );
}

pub async fn grants_live_until_revoked_and_go_with_their_route(h: Handles) {
    let s = &*h.first;
    s.claim_route("db", "a@x", 0).await.expect("claim");
    let tools = vec!["read_query".to_owned()];
    let memo = vec!["memo://*".to_owned()];
    let g = s
        .create_grant(&NewGrant {
            route: "db",
            grantee: "b@x",
            tools: Some(&tools),
            resources: &[],
            prompts: &[],
            read_only: true,
            created_by: "a@x",
            expires_at: Some(crate::now() + 60),
        })
        .await
        .expect("create");
    assert_eq!(g.tools.as_deref(), Some(&tools[..]));
    let all = h
        .second
        .create_grant(&NewGrant {
            route: "db",
            grantee: "@y",
            tools: None,
            resources: &memo,
            prompts: &["*".to_owned()],
            read_only: false,
            created_by: "a@x",
            expires_at: None,
        })
        .await
        .expect("create");
    assert_eq!(
        s.route_grants("db").await.expect("grants"),
        [g.clone(), all.clone()]
    );
    assert_eq!(s.owner_grants("a@x", None).await.expect("list").len(), 2);
    assert_eq!(
        s.owner_grants("a@x", Some("db")).await.expect("list").len(),
        2
    );
    assert!(s
        .owner_grants("a@x", Some("x"))
        .await
        .expect("list")
        .is_empty());
    assert!(s.owner_grants("b@x", None).await.expect("list").is_empty());
    assert_eq!(s.grant(&g.id).await.expect("get"), Some(g.clone()));
    assert!(h.second.revoke_grant(&g.id).await.expect("revoke"));
    assert!(!s.revoke_grant(&g.id).await.expect("revoke again"));
    assert_eq!(s.grant(&g.id).await.expect("get"), None);
    assert_eq!(s.route_grants("db").await.expect("grants"), [all]);
    // A released route's grants do not pass to its next owner.
    assert!(s.release_route("db").await.expect("release"));
    s.claim_route("db", "c@x", 0).await.expect("claim");
    assert!(s.route_grants("db").await.expect("grants").is_empty());
}

pub async fn tool_pins_record_changes_once(h: Handles) {
    let s = &*h.first;
    s.claim_route("db", "a@x", 0).await.expect("claim");
    assert!(s.pin_tool("db", "t", "h1", "{}").await.expect("pin"));
    assert!(
        !h.second.pin_tool("db", "t", "h2", "{}").await.expect("pin"),
        "first sight only"
    );
    assert!(s.pending_tools("db").await.expect("pending").is_empty());
    // A change is recorded once, a further change again.
    assert!(s
        .note_tool_change("db", "t", "h2", "{\"d\":2}")
        .await
        .expect("note"));
    assert!(!s
        .note_tool_change("db", "t", "h2", "{\"d\":2}")
        .await
        .expect("note"));
    assert!(
        !s.note_tool_change("db", "t", "h1", "{}")
            .await
            .expect("note"),
        "the pin is no change"
    );
    assert_eq!(h.second.pending_tools("db").await.expect("pending"), ["t"]);
    assert!(s.pending_tools("other").await.expect("pending").is_empty());
    let pins = h.second.tool_pins("db").await.expect("pins");
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].hash, "h1");
    assert_eq!(
        pins[0].pending.as_ref().map(|p| p.hash.as_str()),
        Some("h2")
    );
    // Approval makes the pending definition the pin.
    assert!(s
        .approve_tool_changes("db", Some("other"))
        .await
        .expect("approve")
        .is_empty());
    let approved = s.approve_tool_changes("db", None).await.expect("approve");
    assert_eq!(
        approved,
        [crate::Repinned {
            tool: "t".into(),
            old_hash: "h1".into(),
            new_hash: "h2".into()
        }]
    );
    let pin = s.tool_pin("db", "t").await.expect("pin").expect("some");
    assert_eq!(
        (pin.hash.as_str(), pin.definition.as_str(), pin.pending),
        ("h2", "{\"d\":2}", None)
    );
    assert_eq!(s.tool_pin("db", "u").await.expect("pin"), None);
    // A revert clears a pending change; a re-pin replaces the pin.
    assert!(s
        .note_tool_change("db", "t", "h3", "{}")
        .await
        .expect("note"));
    assert!(s.clear_tool_change("db", "t", "h2").await.expect("clear"));
    assert!(!s
        .clear_tool_change("db", "t", "h2")
        .await
        .expect("clear again"));
    assert!(s.pending_tools("db").await.expect("pending").is_empty());
    assert_eq!(
        s.repin_tool("db", "t", "h2", "{}").await.expect("repin"),
        None
    );
    let r = s
        .repin_tool("db", "t", "h4", "{}")
        .await
        .expect("repin")
        .expect("changed");
    assert_eq!((r.old_hash.as_str(), r.new_hash.as_str()), ("h2", "h4"));
    // Releasing the route forgets its pins.
    assert!(s.release_route("db").await.expect("release"));
    assert!(s.tool_pins("db").await.expect("pins").is_empty());
}

pub async fn users_and_their_groups(h: Handles) {
    let s = &*h.first;
    s.add_user("b@x", "$hash-b").await.expect("add");
    s.add_user("a@x", "$hash-a").await.expect("add");
    assert!(matches!(
        h.second.add_user("a@x", "$other").await,
        Err(StoreError::UserExists(_))
    ));
    assert_eq!(
        h.second
            .user_password_hash("a@x")
            .await
            .expect("hash")
            .as_deref(),
        Some("$hash-a")
    );
    assert_eq!(s.user_password_hash("c@x").await.expect("hash"), None);
    let users = s.list_users().await.expect("list");
    assert_eq!(
        users.iter().map(|u| u.0.as_str()).collect::<Vec<_>>(),
        ["a@x", "b@x"]
    );
    // Groups: the latest sign-in tells them.
    assert!(s.groups("a@x").await.expect("groups").is_empty());
    s.set_groups("a@x", &["data".into(), "ops".into()])
        .await
        .expect("set");
    assert_eq!(
        h.second.groups("a@x").await.expect("groups"),
        ["data", "ops"]
    );
    s.set_groups("a@x", &["ops".into()]).await.expect("set");
    assert_eq!(s.groups("a@x").await.expect("groups"), ["ops"]);
    // Removing a user ends their sessions and revokes their OAuth tokens.
    let session = s.create_session(Some("a@x"), 60).await.expect("session");
    let issued = s.issue_tokens(&grant("f1"), TTL).await.expect("issue");
    assert!(access(s, &issued.access_token).await.is_ok());
    h.second.remove_user("a@x").await.expect("remove");
    assert!(matches!(
        s.remove_user("a@x").await,
        Err(StoreError::NoSuchUser(_))
    ));
    assert_eq!(s.session(&session).await.expect("session"), None);
    assert_eq!(
        access(s, &issued.access_token).await,
        Err(TokenRejection::Revoked)
    );
    assert_eq!(s.user_password_hash("a@x").await.expect("hash"), None);
}

pub async fn clients_consents_and_sessions(h: Handles) {
    let s = &*h.first;
    let client = OAuthClient {
        client_id: "c1".into(),
        client_name: Some("Claude".into()),
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        created_at: 7,
    };
    s.insert_client(&client).await.expect("insert");
    assert!(
        h.second.insert_client(&client).await.is_err(),
        "ids are unique"
    );
    assert_eq!(
        h.second.client("c1").await.expect("get"),
        Some(client.clone())
    );
    assert_eq!(s.client("c2").await.expect("get"), None);
    let doc = OAuthClient {
        client_id: "https://app.example/client.json".into(),
        client_name: None,
        redirect_uris: vec!["https://app.example/cb".into()],
        created_at: 8,
    };
    s.upsert_client(&doc).await.expect("upsert");
    let renamed = OAuthClient {
        client_name: Some("App".into()),
        created_at: 9,
        ..doc.clone()
    };
    s.upsert_client(&renamed).await.expect("upsert again");
    assert_eq!(s.client(&doc.client_id).await.expect("get"), Some(renamed));
    // Consents: per person, client and route; a later one replaces the scope.
    assert_eq!(
        s.consent_scope("a@x", "c1", "db").await.expect("consent"),
        None
    );
    s.record_consent("a@x", "c1", "db", "mcp:read")
        .await
        .expect("record");
    s.record_consent("a@x", "c1", "db", "mcp")
        .await
        .expect("record");
    assert_eq!(
        h.second
            .consent_scope("a@x", "c1", "db")
            .await
            .expect("consent")
            .as_deref(),
        Some("mcp")
    );
    assert_eq!(
        s.consent_scope("a@x", "c1", "other")
            .await
            .expect("consent"),
        None
    );
    // Sessions: live until ended or expired.
    let id = s.create_session(None, 60).await.expect("create");
    let session = h.second.session(&id).await.expect("get").expect("live");
    assert_eq!(session.email, None);
    assert_eq!(session.csrf.len(), 64);
    let signed_in = s.create_session(Some("a@x"), 60).await.expect("create");
    assert_eq!(
        s.session(&signed_in)
            .await
            .expect("get")
            .and_then(|s| s.email)
            .as_deref(),
        Some("a@x")
    );
    h.second.end_session(&id).await.expect("end");
    assert_eq!(s.session(&id).await.expect("get"), None);
    let expired = s.create_session(None, 0).await.expect("create");
    assert_eq!(s.session(&expired).await.expect("get"), None);
    assert_eq!(s.session("nope").await.expect("get"), None);
}

pub async fn device_codes_are_pending_until_decided_then_spent_once(h: Handles) {
    let s = &*h.first;
    let code = s
        .insert_device_code("BCDFGHJK", "drawbridge-agent", 600, 1)
        .await
        .expect("insert");
    assert!(
        matches!(
            h.second.insert_device_code("BCDFGHJK", "x", 600, 1).await,
            Err(StoreError::Conflict(_))
        ),
        "user codes are unique"
    );
    assert_eq!(
        s.poll_device(&code).await.expect("poll"),
        DevicePoll::Pending
    );
    // At once again: too fast, and the interval grows.
    assert_eq!(
        s.poll_device(&code).await.expect("poll"),
        DevicePoll::SlowDown
    );
    assert_eq!(
        s.poll_device(&code).await.expect("poll"),
        DevicePoll::SlowDown
    );
    let pending = s
        .pending_device("BCDFGHJK")
        .await
        .expect("lookup")
        .expect("pending");
    assert_eq!(pending.client_id, "drawbridge-agent");
    assert!(s
        .pending_device("BCDFGHJL")
        .await
        .expect("lookup")
        .is_none());
    assert!(h
        .second
        .decide_device("BCDFGHJK", "a@x", true)
        .await
        .expect("approve"));
    assert!(!s
        .decide_device("BCDFGHJK", "b@x", true)
        .await
        .expect("decided once"));
    assert!(s
        .pending_device("BCDFGHJK")
        .await
        .expect("lookup")
        .is_none());
    assert_eq!(
        s.poll_device(&code).await.expect("poll"),
        DevicePoll::Approved("a@x".into())
    );
    assert_eq!(
        s.poll_device(&code).await.expect("poll"),
        DevicePoll::Unknown
    );
    // Denied, and expired.
    let denied = s
        .insert_device_code("CDFGHJKL", "c", 600, 1)
        .await
        .expect("insert");
    assert!(s
        .decide_device("CDFGHJKL", "a@x", false)
        .await
        .expect("deny"));
    assert_eq!(
        s.poll_device(&denied).await.expect("poll"),
        DevicePoll::Denied
    );
    let expired = s
        .insert_device_code("DFGHJKLM", "c", 0, 1)
        .await
        .expect("insert");
    assert_eq!(
        s.poll_device(&expired).await.expect("poll"),
        DevicePoll::Expired
    );
    assert!(!s
        .decide_device("DFGHJKLM", "a@x", true)
        .await
        .expect("too late"));
}

fn pass() -> crate::CodeCheck {
    Box::new(|_| Ok(()))
}

pub async fn a_code_is_redeemed_once_and_a_replay_revokes_its_tokens(h: Handles) {
    let s = &*h.first;
    let c = code("fam");
    let secret = s.insert_code(&c).await.expect("insert");
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let check: crate::CodeCheck = Box::new(move |code| {
        *seen2.lock().expect("lock") = Some(code.clone());
        Ok(())
    });
    let issued = match s.redeem_code(&secret, check, TTL).await.expect("redeem") {
        CodeRedemption::Issued(code, issued) => {
            assert_eq!(*code, c);
            issued
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(seen.lock().expect("lock").as_ref(), Some(&c), "checked");
    assert_eq!((issued.expires_in, issued.scope.as_str()), (3600, "mcp"));
    assert!(access(s, &issued.access_token).await.is_ok());
    let refresh = s
        .oauth_token(&issued.refresh_token)
        .await
        .expect("lookup")
        .expect("some");
    assert_eq!(
        (
            refresh.kind,
            refresh.family.as_str(),
            refresh.email.as_str()
        ),
        (OAuthTokenKind::Refresh, "fam", "a@x")
    );
    assert_eq!(
        h.second
            .redeem_code(&secret, pass(), TTL)
            .await
            .expect("redeem"),
        CodeRedemption::Replayed
    );
    assert_eq!(
        access(s, &issued.access_token).await,
        Err(TokenRejection::Revoked)
    );
    assert_eq!(
        s.redeem_code("nope", pass(), TTL).await.expect("redeem"),
        CodeRedemption::Unknown
    );
    // A refused code is spent all the same, and issues nothing.
    let other = s.insert_code(&code("fam2")).await.expect("insert");
    let refuse: crate::CodeCheck = Box::new(|_| Err(Refusal::new("invalid_grant", "no")));
    assert_eq!(
        s.redeem_code(&other, refuse, TTL).await.expect("redeem"),
        CodeRedemption::Refused(Refusal::new("invalid_grant", "no"))
    );
    assert_eq!(
        s.redeem_code(&other, pass(), TTL).await.expect("redeem"),
        CodeRedemption::Replayed
    );
}

fn issue_as(scope: &str) -> crate::RefreshCheck {
    let scope = scope.to_owned();
    Box::new(move |_| RefreshVerdict::Issue { scope })
}

pub async fn a_refresh_token_rotates_once(h: Handles) {
    let s = &*h.first;
    let issued = s.issue_tokens(&grant("f2"), TTL).await.expect("issue");
    // A refresh token is not a bearer token for routes, nor an access token
    // a refresh token.
    assert_eq!(
        access(s, &issued.refresh_token).await,
        Err(TokenRejection::Unknown)
    );
    assert_eq!(
        s.refresh(&issued.access_token, issue_as("mcp"), TTL)
            .await
            .expect("refresh"),
        RefreshOutcome::Unknown
    );
    // A refusal changes nothing.
    let refuse: crate::RefreshCheck =
        Box::new(|_| RefreshVerdict::Refuse(Refusal::new("invalid_grant", "other client")));
    assert!(matches!(
        s.refresh(&issued.refresh_token, refuse, TTL)
            .await
            .expect("refresh"),
        RefreshOutcome::Refused(_)
    ));
    let next = match h
        .second
        .refresh(&issued.refresh_token, issue_as("mcp:read"), TTL)
        .await
        .expect("refresh")
    {
        RefreshOutcome::Issued(next) => next,
        other => panic!("{other:?}"),
    };
    assert_eq!(next.scope, "mcp:read");
    let t = s
        .oauth_token(&next.access_token)
        .await
        .expect("get")
        .expect("some");
    assert_eq!((t.family.as_str(), t.scope.as_str()), ("f2", "mcp:read"));
    let old = s
        .oauth_token(&issued.refresh_token)
        .await
        .expect("get")
        .expect("some");
    assert!(old.rotated_at.is_some());
    // Exchanged again: a reuse, and the whole family is revoked.
    assert!(matches!(
        s.refresh(&issued.refresh_token, issue_as("mcp"), TTL)
            .await
            .expect("refresh"),
        RefreshOutcome::Reused(_)
    ));
    assert_eq!(
        access(s, &next.access_token).await,
        Err(TokenRejection::Revoked)
    );
    // A verdict may revoke the family itself.
    let other = s.issue_tokens(&grant("f3"), TTL).await.expect("issue");
    let revoke: crate::RefreshCheck =
        Box::new(|_| RefreshVerdict::RevokeFamily(Refusal::new("invalid_grant", "reused")));
    assert!(matches!(
        s.refresh(&other.refresh_token, revoke, TTL)
            .await
            .expect("refresh"),
        RefreshOutcome::Refused(_)
    ));
    assert_eq!(
        access(s, &other.access_token).await,
        Err(TokenRejection::Revoked)
    );
    // One token, and a family, revoked directly; expired tokens are refused.
    let third = s.issue_tokens(&grant("f4"), TTL).await.expect("issue");
    let t = s
        .oauth_token(&third.access_token)
        .await
        .expect("get")
        .expect("some");
    h.second.revoke_oauth_token(&t.id).await.expect("revoke");
    assert_eq!(
        access(s, &third.access_token).await,
        Err(TokenRejection::Revoked)
    );
    assert!(s
        .oauth_token(&third.refresh_token)
        .await
        .expect("get")
        .expect("some")
        .revoked_at
        .is_none());
    s.revoke_family("f4").await.expect("revoke");
    assert!(s
        .oauth_token(&third.refresh_token)
        .await
        .expect("get")
        .expect("some")
        .revoked_at
        .is_some());
    let short = s
        .issue_tokens(
            &grant("f5"),
            TokenTtl {
                access: 0,
                refresh: 0,
            },
        )
        .await
        .expect("issue");
    assert_eq!(
        access(s, &short.access_token).await,
        Err(TokenRejection::Expired)
    );
}

/// Runs `attempt` [`RACERS`] times at once, alternating the handles.
async fn race<T, F, Fut>(h: &Handles, attempt: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = if i % 2 == 0 {
            h.first.clone()
        } else {
            h.second.clone()
        };
        let fut = attempt(store);
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            fut.await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("racer"));
    }
    out
}

pub async fn concurrent_device_polls_spend_the_code_once(h: Handles) {
    let code = h
        .first
        .insert_device_code("BCDFGHJK", "drawbridge-agent", 600, 1)
        .await
        .expect("insert");
    assert!(h
        .second
        .decide_device("BCDFGHJK", "a@x", true)
        .await
        .expect("approve"));
    let polls = race(&h, |s| {
        let code = code.clone();
        async move { s.poll_device(&code).await.expect("poll") }
    })
    .await;
    let approved = polls
        .iter()
        .filter(|p| **p == DevicePoll::Approved("a@x".into()))
        .count();
    assert_eq!(approved, 1, "{polls:?}");
    assert!(polls
        .iter()
        .all(|p| matches!(p, DevicePoll::Approved(_) | DevicePoll::Unknown)));
}

pub async fn concurrent_code_redemptions_issue_once(h: Handles) {
    let secret = h.first.insert_code(&code("fam")).await.expect("insert");
    let outcomes = race(&h, |s| {
        let secret = secret.clone();
        async move { s.redeem_code(&secret, pass(), TTL).await.expect("redeem") }
    })
    .await;
    let issued: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            CodeRedemption::Issued(_, t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(issued.len(), 1, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CodeRedemption::Replayed)
            .count(),
        RACERS - 1
    );
    // The replays revoked what the winner got, whichever order they ran in.
    assert_eq!(
        access(&*h.first, &issued[0].access_token).await,
        Err(TokenRejection::Revoked)
    );
}

pub async fn concurrent_refreshes_rotate_once(h: Handles) {
    let first = h.first.issue_tokens(&grant("f"), TTL).await.expect("issue");
    let outcomes = race(&h, |s| {
        let presented = first.refresh_token.clone();
        async move {
            s.refresh(&presented, issue_as("mcp"), TTL)
                .await
                .expect("refresh")
        }
    })
    .await;
    let issued: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            RefreshOutcome::Issued(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(issued.len(), 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, RefreshOutcome::Issued(_) | RefreshOutcome::Reused(_))));
    // The reuses revoked the family, the winner's new pair included.
    assert_eq!(
        access(&*h.first, &issued[0].access_token).await,
        Err(TokenRejection::Revoked)
    );
}

pub async fn concurrent_route_claims_have_one_winner_within_the_cap(h: Handles) {
    // One name, as many owners as racers: one gets it.
    let n = std::sync::atomic::AtomicUsize::new(0);
    let claims = race(&h, |s| {
        let owner = format!("o{}@x", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        async move {
            let claim = s.claim_route("db", &owner, 0).await.expect("claim");
            (owner, claim)
        }
    })
    .await;
    let winners: Vec<_> = claims
        .iter()
        .filter(|(_, c)| *c == RouteClaim::Granted)
        .map(|(o, _)| o.clone())
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    assert!(claims.iter().all(|(_, c)| *c == RouteClaim::Granted
        || *c
            == RouteClaim::Taken {
                owner: winners[0].clone()
            }));
    assert_eq!(
        h.second.route_owner("db").await.expect("owner"),
        Some(winners[0].clone())
    );
    // One owner, as many names as racers, a cap of 3: three get theirs.
    let claims = race(&h, |s| {
        let name = format!("r{}", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        async move { s.claim_route(&name, "p@x", 3).await.expect("claim") }
    })
    .await;
    let granted = claims.iter().filter(|c| **c == RouteClaim::Granted).count();
    assert_eq!(granted, 3, "{claims:?}");
    assert!(claims
        .iter()
        .all(|c| matches!(c, RouteClaim::Granted | RouteClaim::TooMany { max: 3 })));
}

/// Waits (up to a generous bound) until `feed` has delivered every change
/// of `want`; other changes may come between.
async fn expect_changes(feed: &mut ChangeFeed, want: &[Change]) {
    let mut missing: HashSet<Change> = want.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !missing.is_empty() {
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Some(c)) => {
                missing.remove(&c);
            }
            Ok(None) => panic!("the feed ended; missing {missing:?}"),
            Err(_) => panic!("changes not delivered: {missing:?}"),
        }
    }
}

pub async fn the_feed_reports_every_write_of_any_handle(h: Handles) {
    let mut feed = h.first.changes();
    // Written through the other handle (another process, another node).
    let w = &*h.second;
    let (t, _) = w
        .create_token(TokenKind::Agent, "a@x", "laptop", None)
        .await
        .expect("create");
    w.rotate_token(&t.id, Duration::from_secs(60), None)
        .await
        .expect("rotate");
    expect_changes(&mut feed, &[Change::Token { id: t.id.clone() }]).await;
    w.revoke_token(&t.id).await.expect("revoke");
    expect_changes(&mut feed, &[Change::Token { id: t.id.clone() }]).await;
    w.claim_route("db", "a@x", 0).await.expect("claim");
    expect_changes(&mut feed, &[Change::Route { name: "db".into() }]).await;
    let g = w
        .create_grant(&NewGrant {
            route: "db",
            grantee: "b@x",
            tools: None,
            resources: &[],
            prompts: &[],
            read_only: false,
            created_by: "a@x",
            expires_at: None,
        })
        .await
        .expect("grant");
    expect_changes(&mut feed, &[Change::Grants { route: "db".into() }]).await;
    w.revoke_grant(&g.id).await.expect("revoke");
    expect_changes(&mut feed, &[Change::Grants { route: "db".into() }]).await;
    w.pin_tool("db", "t", "h1", "{}").await.expect("pin");
    expect_changes(&mut feed, &[Change::Pins { route: "db".into() }]).await;
    w.note_tool_change("db", "t", "h2", "{}")
        .await
        .expect("note");
    expect_changes(&mut feed, &[Change::Pins { route: "db".into() }]).await;
    w.approve_tool_changes("db", None).await.expect("approve");
    expect_changes(&mut feed, &[Change::Pins { route: "db".into() }]).await;
    w.repin_tool("db", "t", "h3", "{}").await.expect("repin");
    expect_changes(&mut feed, &[Change::Pins { route: "db".into() }]).await;
    w.release_route("db").await.expect("release");
    expect_changes(
        &mut feed,
        &[
            Change::Route { name: "db".into() },
            Change::Grants { route: "db".into() },
            Change::Pins { route: "db".into() },
        ],
    )
    .await;
    w.add_user("u@x", "$h").await.expect("add");
    expect_changes(
        &mut feed,
        &[Change::User {
            email: "u@x".into(),
        }],
    )
    .await;
    w.set_groups("u@x", &["ops".into()]).await.expect("groups");
    expect_changes(
        &mut feed,
        &[Change::User {
            email: "u@x".into(),
        }],
    )
    .await;
    w.remove_user("u@x").await.expect("remove");
    expect_changes(
        &mut feed,
        &[Change::User {
            email: "u@x".into(),
        }],
    )
    .await;
    let issued = w.issue_tokens(&grant("fam"), TTL).await.expect("issue");
    let access = w
        .oauth_token(&issued.access_token)
        .await
        .expect("get")
        .expect("some");
    w.revoke_oauth_token(&access.id).await.expect("revoke");
    expect_changes(&mut feed, &[Change::OAuthToken { id: access.id }]).await;
    w.revoke_family("fam").await.expect("revoke");
    expect_changes(
        &mut feed,
        &[Change::OAuthFamily {
            family: "fam".into(),
        }],
    )
    .await;
    // A replayed code and a reused refresh token revoke their family.
    let secret = w.insert_code(&code("fam2")).await.expect("code");
    w.redeem_code(&secret, pass(), TTL).await.expect("redeem");
    w.redeem_code(&secret, pass(), TTL).await.expect("replay");
    expect_changes(
        &mut feed,
        &[Change::OAuthFamily {
            family: "fam2".into(),
        }],
    )
    .await;
    // Writes through the feed's own handle are reported too.
    h.first.claim_route("own", "a@x", 0).await.expect("claim");
    expect_changes(&mut feed, &[Change::Route { name: "own".into() }]).await;
}

pub async fn hooks_hear_a_write_before_it_returns(h: Handles) {
    // Hooks are called for this handle's writes before they return, and for
    // others' by the time `fresh` returns true.
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = heard.clone();
    h.first.on_change(Arc::new(move |c: &Change| {
        sink.lock().expect("lock").push(c.clone());
    }));
    let (t, _) = h
        .first
        .create_token(TokenKind::Agent, "a@x", "laptop", None)
        .await
        .expect("create");
    h.first.revoke_token(&t.id).await.expect("revoke");
    let token = Change::Token { id: t.id.clone() };
    assert!(heard.lock().expect("lock").contains(&token));
    h.first.claim_route("db", "a@x", 0).await.expect("claim");
    assert!(heard
        .lock()
        .expect("lock")
        .contains(&Change::Route { name: "db".into() }));
    // Another handle's write (another process) is heard once `fresh` says
    // the hooks are up to date.
    h.second
        .claim_route("other", "a@x", 0)
        .await
        .expect("claim");
    let other = Change::Route {
        name: "other".into(),
    };
    // A backend whose proof of freshness may be that old (PostgreSQL: its
    // listener's latest read) says fresh only once it covers the write.
    tokio::time::sleep(h.first.freshness_bound()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !h.first.fresh() {
        assert!(tokio::time::Instant::now() < deadline, "never fresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(heard.lock().expect("lock").contains(&other));
}

pub async fn the_store_answers_a_ping(h: Handles) {
    h.first.ping().await.expect("ping");
    h.second.ping().await.expect("ping");
}

pub async fn nodes_are_live_while_they_heartbeat_and_hold_agent_sessions(h: Handles) {
    // Two nodes, each registered through its own handle (its own process).
    const STALE: i64 = 60_000;
    h.first
        .register_node("n1", "127.0.0.1:4431", "127.0.0.1:8441")
        .await
        .expect("register");
    h.second
        .register_node("n2", "127.0.0.1:4432", "127.0.0.1:8442")
        .await
        .expect("register");
    let live = h.first.live_nodes(STALE).await.expect("live");
    let ids: Vec<_> = live.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2"]);
    assert_eq!(live[0].agent_address, "127.0.0.1:4431");
    assert_eq!(live[1].peer_address, "127.0.0.1:8442");
    assert!(h.first.node_heartbeat("n1").await.expect("heartbeat"));
    assert!(!h.first.node_heartbeat("n9").await.expect("heartbeat"));
    // Registering again (a new address) updates the row.
    h.second
        .register_node("n2", "127.0.0.1:4433", "127.0.0.1:8442")
        .await
        .expect("register again");
    let live = h.first.live_nodes(STALE).await.expect("live");
    assert_eq!(live.len(), 2);
    assert_eq!(live[1].agent_address, "127.0.0.1:4433");

    // One agent instance with sessions on both nodes, another on one.
    for (node, instance) in [("n1", "i1"), ("n2", "i1"), ("n2", "i2")] {
        h.first
            .add_agent_session("db", node, instance)
            .await
            .expect("add");
    }
    h.second
        .add_agent_session("db", "n1", "i1")
        .await
        .expect("added twice");
    let held: Vec<_> = h
        .second
        .agent_sessions("db", STALE)
        .await
        .expect("sessions")
        .into_iter()
        .map(|s| (s.node.id, s.instance))
        .collect();
    assert_eq!(
        held,
        [
            ("n1".to_owned(), "i1".to_owned()),
            ("n2".into(), "i1".into()),
            ("n2".into(), "i2".into())
        ]
    );
    assert!(h
        .first
        .agent_sessions("other", STALE)
        .await
        .expect("none")
        .is_empty());
    h.second
        .remove_agent_session("db", "n2", "i2")
        .await
        .expect("remove");
    assert_eq!(
        h.first.agent_sessions("db", STALE).await.expect("s").len(),
        2
    );

    // A node whose heartbeat is stale is not live, and its sessions are
    // ignored.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(h.first.node_heartbeat("n1").await.expect("heartbeat"));
    let live = h.second.live_nodes(1000).await.expect("live");
    assert_eq!(
        live.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n1"]
    );
    let held = h.second.agent_sessions("db", 1000).await.expect("s");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].node.id, "n1");
    assert_eq!(held[0].node.agent_address, "127.0.0.1:4431");

    // Nodes dead for long are forgotten, with their sessions; live ones
    // are kept.
    h.first
        .add_agent_session("db", "n2", "i9")
        .await
        .expect("add");
    assert_eq!(h.first.forget_dead_nodes(STALE).await.expect("forget"), 0);
    assert_eq!(h.first.forget_dead_nodes(1000).await.expect("forget"), 1);
    assert_eq!(h.first.live_nodes(STALE).await.expect("live").len(), 1);
    h.second
        .register_node("n2", "127.0.0.1:4432", "127.0.0.1:8442")
        .await
        .expect("register");
    assert_eq!(
        h.first.agent_sessions("db", STALE).await.expect("s").len(),
        1,
        "n2's sessions went with it"
    );

    // A clean drain removes the node and its sessions.
    assert!(h.second.remove_node("n2").await.expect("remove"));
    assert!(!h.second.remove_node("n2").await.expect("removed already"));
    assert!(!h.second.node_heartbeat("n2").await.expect("heartbeat"));
    h.second
        .register_node("n2", "127.0.0.1:4432", "127.0.0.1:8442")
        .await
        .expect("register");
    let held = h.first.agent_sessions("db", STALE).await.expect("s");
    assert_eq!(held.len(), 1, "n2's sessions went with it: {held:?}");
}

pub async fn mcp_sessions_name_their_agent_instance(h: Handles) {
    assert_eq!(h.first.mcp_session("s1").await.expect("get"), None);
    h.first
        .add_mcp_session("s1", "db", "i1")
        .await
        .expect("add");
    h.first
        .add_mcp_session("s2", "db", "i2")
        .await
        .expect("add");
    // Any node sees which instance holds it.
    assert_eq!(
        h.second.mcp_session("s1").await.expect("get"),
        Some(crate::SessionHolder {
            route: "db".into(),
            instance: "i1".into()
        })
    );
    h.second.remove_mcp_session("s1").await.expect("remove");
    assert_eq!(h.first.mcp_session("s1").await.expect("get"), None);
    // Old ones are pruned, newer ones kept.
    assert_eq!(
        h.second
            .prune_mcp_sessions(crate::now_ms() - 60_000)
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        h.second
            .prune_mcp_sessions(crate::now_ms() + 1)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(h.first.mcp_session("s2").await.expect("get"), None);
}

fn shipped(node: &str, seq: i64, route: &str, decision: &str, time_ms: i64) -> ShippedEvent {
    ShippedEvent {
        node: node.into(),
        seq,
        hash: format!("{seq:064x}"),
        time: format!("t{time_ms}"),
        time_ms,
        request_id: format!("{node}-{seq}"),
        route: route.into(),
        decision: decision.into(),
        // Exact text, as written (spaces and member order kept).
        line: format!("{{\"request_id\":\"{node}-{seq}\", \"seq\":{seq}}}"),
    }
}

pub async fn audit_events_are_stored_once_per_log_and_seq(h: Handles) {
    // A backend without the cluster's audit table says so, on every call.
    match h.first.audit_shipped_up_to("n1").await {
        Err(StoreError::Unsupported(_)) => {
            assert!(matches!(
                h.first
                    .ship_audit_events(&[shipped("n1", 1, "db", "allow", 1)])
                    .await,
                Err(StoreError::Unsupported(_))
            ));
            assert!(matches!(
                h.second.audit_events(&AuditFilter::default()).await,
                Err(StoreError::Unsupported(_))
            ));
            assert!(matches!(
                h.second.audit_shipped_hash("n1", 1).await,
                Err(StoreError::Unsupported(_))
            ));
            return;
        }
        Ok(0) => {}
        other => panic!("a fresh store has shipped nothing: {other:?}"),
    }
    assert_eq!(h.first.ship_audit_events(&[]).await.expect("none"), 0);
    let batch: Vec<_> = (1..=3)
        .map(|i| shipped("n1", i, "db", "allow", 1000 + i))
        .collect();
    assert_eq!(h.first.ship_audit_events(&batch).await.expect("ship"), 3);
    // Shipped again (a node killed before it knew it had shipped): nothing
    // new, and the rest of the batch is stored.
    let mut again = batch[1..].to_vec();
    again.push(shipped("n1", 4, "other", "deny", 1004));
    assert_eq!(h.second.ship_audit_events(&again).await.expect("ship"), 1);
    assert_eq!(h.second.audit_shipped_up_to("n1").await.expect("up to"), 4);
    assert_eq!(h.second.audit_shipped_up_to("n2").await.expect("up to"), 0);
    // Each event's hash, by log and seq.
    assert_eq!(
        h.first.audit_shipped_hash("n1", 4).await.expect("hash"),
        Some(format!("{:064x}", 4))
    );
    assert_eq!(
        h.first.audit_shipped_hash("n1", 5).await.expect("hash"),
        None
    );
    assert_eq!(
        h.first.audit_shipped_hash("n2", 1).await.expect("hash"),
        None
    );
    // Another node's log has its own seqs.
    assert_eq!(
        h.second
            .ship_audit_events(&[shipped("n2", 1, "db", "deny", 1002)])
            .await
            .expect("ship"),
        1
    );
    let all = h
        .first
        .audit_events(&AuditFilter::default())
        .await
        .expect("all");
    let keys: Vec<_> = all.iter().map(|e| (e.node.as_str(), e.seq)).collect();
    assert_eq!(
        keys,
        [("n1", 1), ("n1", 2), ("n2", 1), ("n1", 3), ("n1", 4)]
    );
    assert_eq!(
        all[0], batch[0],
        "read back as shipped, the line's text exact"
    );
    let filtered = |route: Option<&str>, decision: Option<&str>, since_ms: Option<i64>| {
        let filter = AuditFilter {
            route: route.map(str::to_owned),
            decision: decision.map(str::to_owned),
            since_ms,
        };
        let s = h.second.clone();
        async move {
            s.audit_events(&filter)
                .await
                .expect("filtered")
                .into_iter()
                .map(|e| e.request_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        filtered(Some("db"), None, None).await,
        ["n1-1", "n1-2", "n2-1", "n1-3"]
    );
    assert_eq!(filtered(None, Some("deny"), None).await, ["n2-1", "n1-4"]);
    assert_eq!(
        filtered(Some("db"), Some("allow"), Some(1002)).await,
        ["n1-2", "n1-3"]
    );
}

const SIGN_IN_BOUNDS: SignInBounds = SignInBounds {
    ttl_ms: 600_000,
    per_session: 3,
    per_address: 5,
    total: 8,
};

fn pending_sign_in(session: &str, address: &str, started_ms: i64) -> PendingSignIn {
    PendingSignIn {
        provider: "oidc".into(),
        session_hash: crate::token::hash(session),
        address: address.into(),
        verifier: format!("verifier-{started_ms}"),
        nonce: "nonce".into(),
        back: "authorize:client_id=c1".into(),
        started_ms,
    }
}

pub async fn pending_sign_ins_are_taken_once_within_their_bounds(h: Handles) {
    let b = SIGN_IN_BOUNDS;
    let t0 = crate::now_ms();
    // Remembered by one handle, taken by the other, once.
    let p = pending_sign_in("browser", "192.0.2.1", t0);
    assert_eq!(
        h.first
            .remember_sign_in("st0", &p, b)
            .await
            .expect("remember"),
        Remembered::Kept
    );
    assert_eq!(
        h.second
            .take_sign_in("st0", t0 + 1, b.ttl_ms)
            .await
            .expect("take"),
        Some(p.clone())
    );
    assert_eq!(
        h.first
            .take_sign_in("st0", t0 + 1, b.ttl_ms)
            .await
            .expect("take"),
        None
    );
    assert_eq!(
        h.first
            .take_sign_in("nope", t0, b.ttl_ms)
            .await
            .expect("take"),
        None
    );
    // One session keeps its newest few.
    for i in 0..6 {
        let p = pending_sign_in("browser", "192.0.2.1", t0 + i);
        let kept = h.first.remember_sign_in(&format!("s{i}"), &p, b).await;
        assert_eq!(kept.expect("remember"), Remembered::Kept, "{i}");
    }
    assert_eq!(
        h.second
            .take_sign_in("s2", t0 + 9, b.ttl_ms)
            .await
            .expect("take"),
        None
    );
    for i in 3..6 {
        let taken = h
            .second
            .take_sign_in(&format!("s{i}"), t0 + 9, b.ttl_ms)
            .await;
        assert!(taken.expect("take").is_some(), "s{i} is kept");
    }
    // One address, a fresh session each time: bounded, then refused with
    // its oldest's start.
    for i in 0..b.per_address {
        let p = pending_sign_in(&format!("a{i}"), "2001:db8::", t0 + 10 + i as i64);
        let kept = h.first.remember_sign_in(&format!("a{i}"), &p, b).await;
        assert_eq!(kept.expect("remember"), Remembered::Kept, "{i}");
    }
    let p = pending_sign_in("another", "2001:db8::", t0 + 20);
    assert_eq!(
        h.second
            .remember_sign_in("a-over", &p, b)
            .await
            .expect("remember"),
        Remembered::AddressFull { oldest_ms: t0 + 10 }
    );
    // Other addresses up to the total, then it is full.
    for i in 0..(b.total - b.per_address) {
        let p = pending_sign_in(&format!("o{i}"), &format!("192.0.2.{}", 10 + i), t0 + 20);
        let kept = h.first.remember_sign_in(&format!("o{i}"), &p, b).await;
        assert_eq!(kept.expect("remember"), Remembered::Kept, "{i}");
    }
    let p = pending_sign_in("late", "198.51.100.1", t0 + 21);
    assert_eq!(
        h.second
            .remember_sign_in("late", &p, b)
            .await
            .expect("remember"),
        Remembered::Full
    );
    // Once they expire, they are forgotten, and no longer taken.
    let later = t0 + 20 + b.ttl_ms;
    assert_eq!(
        h.first
            .take_sign_in("o0", later, b.ttl_ms)
            .await
            .expect("take"),
        None,
        "expired"
    );
    let p = pending_sign_in("late", "2001:db8::", later);
    assert_eq!(
        h.second
            .remember_sign_in("late", &p, b)
            .await
            .expect("remember"),
        Remembered::Kept
    );
    assert!(h
        .first
        .take_sign_in("late", later, b.ttl_ms)
        .await
        .expect("take")
        .is_some());
}

pub async fn concurrent_takes_of_a_pending_sign_in_have_one_winner(h: Handles) {
    let b = SIGN_IN_BOUNDS;
    let t0 = crate::now_ms();
    let p = pending_sign_in("browser", "192.0.2.1", t0);
    assert_eq!(
        h.first
            .remember_sign_in("raced", &p, b)
            .await
            .expect("remember"),
        Remembered::Kept
    );
    let takes = race(&h, |s| async move {
        s.take_sign_in("raced", t0 + 1, b.ttl_ms)
            .await
            .expect("take")
    })
    .await;
    assert_eq!(takes.iter().filter(|t| t.is_some()).count(), 1, "{takes:?}");
}

pub async fn a_secret_is_created_once_whoever_races(h: Handles) {
    assert_eq!(h.first.secret("ca").await.expect("read"), None);
    // Nodes starting together each offer their own CA: one is kept, and
    // every node gets that one.
    let mut racers = Vec::new();
    for i in 0..RACERS {
        let s = if i % 2 == 0 {
            h.first.clone()
        } else {
            h.second.clone()
        };
        racers.push(tokio::spawn(async move {
            s.create_secret("ca", &format!("ca of node {i}"))
                .await
                .expect("create")
        }));
    }
    let mut kept = HashSet::new();
    for r in racers {
        kept.insert(r.await.expect("racer"));
    }
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = kept.into_iter().next().expect("one");
    assert!(kept.starts_with("ca of node "), "{kept}");
    assert_eq!(
        h.second.secret("ca").await.expect("read"),
        Some(kept.clone())
    );
    assert_eq!(
        h.first.create_secret("ca", "later").await.expect("again"),
        kept
    );

    // Replaced, listed by prefix, removed.
    h.first.put_secret("acme/cert", "c1").await.expect("put");
    h.second.put_secret("acme/cert", "c2").await.expect("put");
    assert_eq!(
        h.first.secret("acme/cert").await.expect("read").as_deref(),
        Some("c2")
    );
    h.first
        .put_secret("acme/challenge/b.example", "x")
        .await
        .expect("put");
    h.first
        .put_secret("acme/challenge/a.example", "y")
        .await
        .expect("put");
    h.first
        .put_secret("acme/challengf", "z")
        .await
        .expect("put");
    assert_eq!(
        h.second
            .secrets_with_prefix("acme/challenge/")
            .await
            .expect("list"),
        [
            ("acme/challenge/a.example".to_owned(), "y".to_owned()),
            ("acme/challenge/b.example".into(), "x".into())
        ]
    );
    assert!(h
        .second
        .remove_secret("acme/challenge/a.example")
        .await
        .expect("remove"));
    assert!(!h
        .first
        .remove_secret("acme/challenge/a.example")
        .await
        .expect("removed already"));
    assert_eq!(
        h.first
            .secrets_with_prefix("acme/challenge/")
            .await
            .expect("list")
            .len(),
        1
    );
}

pub async fn a_lease_has_one_holder_until_it_expires(h: Handles) {
    assert_eq!(h.first.lease("acme").await.expect("read"), None);
    // Nodes racing for a free lease: one holds it.
    let mut racers = Vec::new();
    for i in 0..RACERS {
        let s = if i % 2 == 0 {
            h.first.clone()
        } else {
            h.second.clone()
        };
        racers.push(tokio::spawn(async move {
            let me = format!("n{i}");
            s.take_lease("acme", &me, 60_000)
                .await
                .expect("take")
                .then_some(me)
        }));
    }
    let mut winners = Vec::new();
    for r in racers {
        winners.extend(r.await.expect("racer"));
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let holder = winners.remove(0);
    let lease = h.second.lease("acme").await.expect("read").expect("held");
    assert_eq!(lease.holder, holder);
    assert!(lease.expires_at_ms > crate::now_ms() + 50_000);
    // The holder renews it; another cannot take it while it lasts.
    assert!(h
        .second
        .take_lease("acme", &holder, 60_000)
        .await
        .expect("renew"));
    assert!(!h
        .first
        .take_lease("acme", "other", 60_000)
        .await
        .expect("take"));
    // Released only by its holder.
    h.first
        .release_lease("acme", "other")
        .await
        .expect("release");
    assert_eq!(
        h.first.lease("acme").await.expect("read").map(|l| l.holder),
        Some(holder.clone())
    );
    h.first
        .release_lease("acme", &holder)
        .await
        .expect("release");
    assert_eq!(h.first.lease("acme").await.expect("read"), None);

    // A holder that stops renewing (it died) loses it once it expires.
    assert!(h.first.take_lease("acme", "dead", 200).await.expect("take"));
    assert!(!h
        .second
        .take_lease("acme", "next", 60_000)
        .await
        .expect("take"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(h
        .second
        .take_lease("acme", "next", 60_000)
        .await
        .expect("take over"));
    assert!(!h
        .first
        .take_lease("acme", "dead", 200)
        .await
        .expect("too late"));
    assert_eq!(
        h.first.lease("acme").await.expect("read").map(|l| l.holder),
        Some("next".to_owned())
    );
}
