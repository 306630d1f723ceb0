//! Replays the committed `oauth` fuzz corpus (`fuzz/corpus/oauth`) through
//! the same checks the fuzzer runs (`relay::fuzz::oauth`), so that every
//! input a fuzzer ever kept stays a regression test.

use std::path::Path;

#[test]
fn the_oauth_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/oauth");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        relay::fuzz::oauth(&data);
        n += 1;
    }
    assert!(n >= 10, "oauth: only {n} corpus entries");
}
