//! The conformance suite on the SQLite backend: two handles are two
//! connections to one file, as two processes on one state directory.

use std::sync::Arc;

use store::conformance::Handles;
use store::sqlite::SqliteStore;

/// Removes the state directory when the case is over.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
        guard: Box::new(TempDir(dir)),
    }
}

store::conformance_tests!(fresh);
