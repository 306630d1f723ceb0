//! The conformance suite on the PostgreSQL backend: two handles are two
//! pools on one fresh database of a throwaway server (as two relay nodes),
//! and nodes that start together on an empty database migrate it once.

#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use store::conformance::Handles;
use store::postgres::PostgresStore;
use store::{Change, Changes, Tokens};

async fn fresh() -> Handles {
    let url = support::postgres::shared().create_database().await;
    let first = PostgresStore::connect(&url).await.expect("connect");
    let second = PostgresStore::connect(&url).await.expect("connect again");
    Handles {
        first: Arc::new(first),
        second: Arc::new(second),
        guard: Box::new(()),
    }
}

store::conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    let url = support::postgres::shared().create_database().await;
    let opened = futures_join(
        (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url).await })
            })
            .collect(),
    )
    .await;
    for s in &opened {
        assert_eq!(
            s.schema_versions().await.expect("versions"),
            (1..=store::postgres::latest_schema_version()).collect::<Vec<_>>()
        );
    }
    // Opened again: nothing to apply.
    let again = PostgresStore::connect(&url).await.expect("connect");
    assert_eq!(
        again.schema_versions().await.expect("versions"),
        (1..=store::postgres::latest_schema_version()).collect::<Vec<_>>()
    );
}

async fn futures_join(
    tasks: Vec<tokio::task::JoinHandle<Result<PostgresStore, store::StoreError>>>,
) -> Vec<PostgresStore> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task").expect("connect"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_is_not_one_is_refused() {
    let err = PostgresStore::connect("postgres://[nope")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_asked_for_unless_the_url_disables_it() {
    // The test server has no TLS: `sslmode=require` goes through rustls and
    // is refused; `disable` connects in plain (the default, `prefer`, is the
    // conformance suite's: rustls offered, plain accepted).
    let url = support::postgres::shared().create_database().await;
    let err = PostgresStore::connect(&format!("{url}?sslmode=require"))
        .await
        .err()
        .expect("no TLS on the server");
    assert!(err.to_string().contains("TLS"), "{err}");
    PostgresStore::connect(&format!("{url}?sslmode=disable"))
        .await
        .expect("plain");
}

/// The pid of the server process of this database's change listener.
async fn listener_pid(admin: &tokio_postgres::Client) -> Option<i32> {
    admin
        .query_opt(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&store::postgres::LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("pg_stat_activity")
        .map(|r| r.get(0))
}

async fn until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_its_listener_a_store_is_not_fresh_and_then_recovers() {
    let url = support::postgres::shared().create_database().await;
    let s = PostgresStore::connect(&url).await.expect("connect");
    let other = PostgresStore::connect(&url).await.expect("connect");
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    let mut feed = s.changes();
    assert!(!s.fresh(), "no proof before the listener's first read");
    until("fresh", Duration::from_secs(10), || s.fresh()).await;

    // The listener's server process stops answering (the connection stays
    // open): within the bound the store says it is not fresh.
    let pid = listener_pid(&admin).await.expect("a listener");
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    until("not fresh", Duration::from_secs(3), || !s.fresh()).await;
    // It gives up on that connection, tells its consumers to forget
    // everything, connects again and is fresh again.
    let reset = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if feed.next().await == Some(Change::Reset) {
                return;
            }
        }
    })
    .await;
    signal("-CONT");
    assert!(reset.is_ok(), "no Reset after losing the listener");
    until("fresh again", Duration::from_secs(10), || s.fresh()).await;

    // The listener's connection closed by the server: the same.
    let pid = listener_pid(&admin).await.expect("a new listener");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    until("not fresh", Duration::from_secs(3), || !s.fresh()).await;
    until("fresh again", Duration::from_secs(10), || s.fresh()).await;
    // And changes flow again.
    other.claim_route("db", "a@x", 0).await.expect("claim");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if feed.next().await == Some(Change::Route { name: "db".into() }) {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "a change after reconnecting was not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchanges_of_two_tokens_of_one_family_at_once_do_not_fail() {
    // A reused refresh token (its family revoked) and its successor, sent
    // at once to two nodes, many times: every attempt is answered (no
    // deadlock between the family's revocation and an exchange).
    use store::{Grant, RefreshOutcome, RefreshVerdict, TokenTtl};
    let h = fresh().await;
    let ttl = TokenTtl {
        access: 60,
        refresh: 60,
    };
    for round in 0..8 {
        let family = format!("f{round}");
        let grant = Grant {
            family: &family,
            client_id: "c",
            email: "a@x",
            resource: "https://r/mcp/db",
            scope: "mcp",
        };
        let first = h.first.issue_tokens(&grant, ttl).await.expect("issue");
        let RefreshOutcome::Issued(second) = h
            .first
            .refresh(
                &first.refresh_token,
                Box::new(|_| RefreshVerdict::Issue {
                    scope: "mcp".into(),
                }),
                ttl,
            )
            .await
            .expect("refresh")
        else {
            panic!("not issued");
        };
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 {
                h.first.clone()
            } else {
                h.second.clone()
            };
            let presented = if i % 4 < 2 {
                first.refresh_token.clone()
            } else {
                second.refresh_token.clone()
            };
            tasks.push(tokio::spawn(async move {
                store
                    .refresh(
                        &presented,
                        Box::new(|_| RefreshVerdict::Issue {
                            scope: "mcp".into(),
                        }),
                        ttl,
                    )
                    .await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("answered");
        }
    }
}
