//! A node's audit log deleted by hand, its log id (`audit.node`) kept: the
//! new chain starts at `seq` 1 again, which the cluster's table already
//! holds under that id. The node notices (the table's last event is not
//! its own), ships the new chain under a new log id, and leaves what was
//! shipped before as it was: every event of both chains is in the table.

use std::time::Duration;

use e2e::cluster_audit::{local_seqs, log_id, table};
use e2e::{HttpsClient, RelayProc};

/// `n` audited requests (refused: nobody claimed the route).
async fn events(relay: &RelayProc, token: &str, n: usize, mark: &str) {
    let http = HttpsClient::new(&relay.ca(), false);
    for i in 0..n {
        let answer = http
            .get(
                &format!("{}/{mark}-{i}", relay.route_url("unclaimed")),
                Some(token),
            )
            .await;
        assert!(answer.status.is_client_error(), "{}", answer.text());
    }
}

/// Removes the audit log's files (not `audit.node`).
fn remove_audit_log(relay: &RelayProc) {
    for entry in std::fs::read_dir(relay.state.path()).expect("state dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if (name.starts_with("audit") && name.ends_with(".jsonl")) || name == "audit.head" {
            std::fs::remove_file(&path).expect("remove");
        }
    }
}

/// Waits until the table holds `want` events of `log`; its seqs.
async fn shipped(relay: &RelayProc, log: &str, want: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut seqs: Vec<u64> = table(relay)
            .into_iter()
            .filter(|e| e.node == log)
            .map(|e| e.seq)
            .collect();
        seqs.sort_unstable();
        if seqs.len() >= want || tokio::time::Instant::now() > deadline {
            return seqs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_audit_log_is_shipped_whole_under_a_new_log_id() {
    let url = e2e::postgres::shared().create_database().await;
    let mut relay = RelayProc::start(&["--database-url", &url]).await;
    let token = relay.token("alice@example.com", true);
    let mut logs = Vec::new();
    // Three chains: 6 events; then 3 (fewer than the table holds under the
    // id); then 9 (more: the table's last seq exists locally, another event).
    for (phase, n) in [6usize, 3, 9].into_iter().enumerate() {
        if phase > 0 {
            relay.proc.signal("TERM");
            relay.proc.wait_exit(Duration::from_secs(20)).await;
            remove_audit_log(&relay);
            let state = relay.state.clone();
            let addr = relay.addr.to_string();
            let extra: Vec<String> = relay.extra_args.clone();
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            relay = RelayProc::start_with(state, &addr, &extra).await;
        }
        events(&relay, &token, n, &format!("phase{phase}")).await;
        let local = local_seqs(&relay);
        assert_eq!(local, (1..=n as u64).collect::<Vec<_>>(), "a new chain");
        // A new chain gets a new log id (once shipping has looked).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut log = log_id(&relay);
        while logs.contains(&log) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "phase {phase}: still the log id {log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            log = log_id(&relay);
        }
        let seqs = shipped(&relay, &log, n).await;
        assert_eq!(
            seqs, local,
            "phase {phase}: the chain in the table under {log}"
        );
        if phase == 1 {
            assert!(
                relay
                    .proc
                    .stderr_text()
                    .contains("not the chain shipped under its id"),
                "the relay says why it changed the log id"
            );
        }
        logs.push(log);
    }
    // A new id for each new chain; what was shipped before is unchanged.
    let mut distinct = logs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{logs:?}");
    let all = table(&relay);
    for (phase, (log, n)) in logs.iter().zip([6usize, 3, 9]).enumerate() {
        let mut events: Vec<(u64, String)> = all
            .iter()
            .filter(|e| &e.node == log)
            .map(|e| (e.seq, e.http.clone()))
            .collect();
        events.sort();
        assert_eq!(events.len(), n, "{log}: {events:?}");
        for (i, (seq, http)) in events.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert!(http.contains(&format!("phase{phase}-")), "{http}");
        }
    }
    assert_eq!(all.len(), 18);
}
