//! Replays the committed fuzz corpora (`fuzz/corpus/jsonrpc`,
//! `fuzz/corpus/sql`) through the same checks the fuzzers run
//! (`policy::fuzz`), so that every input a fuzzer ever kept — crashes that
//! were fixed included — stays a regression test.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        check(&data);
        n += 1;
    }
    assert!(n >= 10, "{target}: only {n} corpus entries");
}

#[test]
fn the_jsonrpc_corpus_replays_cleanly() {
    replay("jsonrpc", policy::fuzz::jsonrpc);
}

#[test]
fn the_sql_corpus_replays_cleanly() {
    replay("sql", policy::fuzz::sql);
}
