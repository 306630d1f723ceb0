//! What the audit of a relay on PostgreSQL looks like from outside: the
//! cluster's audit table (`relay audit --json` with the node's own database
//! URL), the id under which the node ships its log (`audit.node`), and the
//! events of its local audit files.

use crate::RelayProc;

/// One event of the cluster's audit table.
pub struct TableEvent {
    /// The id of the log it was shipped from (a node's `audit.node`).
    pub node: String,
    pub seq: u64,
    /// The HTTP method and path below the route.
    pub http: String,
}

/// Every event of the cluster's audit table, as `node` reads it.
pub fn table(node: &RelayProc) -> Vec<TableEvent> {
    let (code, out, err) = node.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "relay audit --database-url: {err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            TableEvent {
                node: v["node"].as_str().expect("node").to_owned(),
                seq: v["seq"].as_u64().expect("seq"),
                http: v["http"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// The id of `node`'s audit log in the cluster's table.
pub fn log_id(node: &RelayProc) -> String {
    std::fs::read_to_string(node.state.path().join("audit.node"))
        .expect("a relay on PostgreSQL has an audit log id")
        .trim()
        .to_owned()
}

/// The `seq` of every event of `node`'s local audit files, in order.
pub fn local_seqs(node: &RelayProc) -> Vec<u64> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(node.state.path()).expect("state dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("audit") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("audit file");
        seqs.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["seq"].as_u64()),
        );
    }
    seqs.sort_unstable();
    seqs
}
