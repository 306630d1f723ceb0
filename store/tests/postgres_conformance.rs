//! The conformance suite on the PostgreSQL backend: two handles are two
//! pools on one fresh database of a throwaway server (as two relay nodes),
//! and nodes that start together on an empty database migrate it once.

#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;

use store::conformance::Handles;
use store::postgres::PostgresStore;

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
            [store::postgres::latest_schema_version()]
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
