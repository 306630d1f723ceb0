//! The conformance suite on the SQLite backend: two handles are two
//! connections to one file, as two processes on one state directory.

use std::sync::Arc;

use store::conformance::Handles;
use store::sqlite::SqliteStore;

async fn fresh() -> Handles {
    let dir = std::env::temp_dir().join(format!(
        "dbr-store-conformance-{}",
        store::token::random_hex(6)
    ));
    let first = SqliteStore::open(&dir).expect("open");
    let second = SqliteStore::open(&dir).expect("open again");
    Handles {
        first: Arc::new(first),
        second: Arc::new(second),
    }
}

store::conformance_tests!(fresh);
