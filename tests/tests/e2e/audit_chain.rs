//! The tamper-evident audit log: a real relay serving real requests seals
//! every line into a hash chain; `relay audit verify` passes on the log it
//! wrote, and names the first line that was changed, removed, reordered or
//! cut (exit 1). Rotation and a crash's torn line keep the chain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;

struct Setup {
    relay: RelayProc,
    _agent: AgentProc,
    _up: Upstream,
    token: String,
    client: HttpsClient,
}

async fn setup(extra: &[&str]) -> Setup {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(extra).await;
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agent: agent,
        _up: up,
        token,
        client,
    }
}

impl Setup {
    /// `n` JSON-RPC requests through the tunnel, each audited.
    async fn calls(&self, n: usize) {
        for i in 0..n {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"read_query","arguments":{{"query":"SELECT {i}"}}}}}}"#
            );
            let req = Request::builder()
                .method("POST")
                .uri(self.relay.route_url("demo"))
                .header("authorization", format!("Bearer {}", self.token))
                .header("content-type", "application/json")
                .body(e2e::client::full_body(Bytes::from(body)))
                .expect("req");
            let a = self.client.fetch(req).await;
            assert_eq!(a.status, 200, "{}", a.text());
        }
    }

    fn dir(&self) -> PathBuf {
        self.relay.state.path().to_path_buf()
    }
}

/// Waits until `audit.head` (written after each sync) names line `seq` of
/// the chain.
async fn settled(dir: &Path, seq: u64) {
    let mut head_seq = 0;
    for _ in 0..200 {
        let head = std::fs::read_to_string(dir.join("audit.head")).unwrap_or_default();
        head_seq = head
            .split(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if head_seq == seq {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit did not reach seq {seq}: {head_seq}");
}

/// The audit files of the state dir, in order (rotated, then live).
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    archives.sort();
    archives.push(dir.join("audit.jsonl"));
    archives
}

fn verify(relay: &RelayProc, files: &[&Path]) -> (i32, String, String) {
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    relay.admin(&args)
}

/// Runs `relay audit verify` on the state dir with `log` as audit.jsonl;
/// expects exit 1 naming `line` of audit.jsonl and saying `what`.
fn expect_broken(relay: &RelayProc, log: &str, line: usize, what: &str) {
    let path = relay.state.path().join("audit.jsonl");
    std::fs::write(&path, log).expect("write the tampered log");
    let (code, out, err) = verify(relay, &[]);
    assert_eq!(code, 1, "tampering not found ({what}): {out}{err}");
    let at = format!("audit.jsonl:{line}: ");
    assert!(
        err.contains(&at) && err.contains(what),
        "expected {at}…{what}, got: {err}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Re-seals a changed line the way the relay does (an attacker who knows the
/// format): only the next line's `prev` can tell.
fn reseal(line: &str) -> String {
    let at = line.rfind(r#","hash":""#).expect("a sealed line");
    let body = format!("{}}}", &line[..at]);
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    format!("{},\"hash\":\"{}\"}}", &line[..at], hex(digest.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_line_that_was_changed_removed_swapped_or_cut() {
    let s = setup(&[]).await;
    s.calls(8).await;
    // A refused request is audited (and chained) too.
    assert_eq!(
        s.client.get(&s.relay.route_url("demo"), None).await.status,
        401
    );
    settled(&s.dir(), 9).await;
    let (code, out, err) = verify(&s.relay, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("audit chain intact: 9 line(s)") && out.contains("seq 1..9 from genesis"),
        "{out}"
    );
    // Readers of the log keep working: every line is still one event.
    let (code, out, err) = s.relay.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 9);
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["prev"], "genesis");
    assert_eq!(events[1]["prev"], events[0]["hash"]);
    assert_eq!(events[8]["status"], 401);

    // Tamper with the log as someone with access to the state dir would.
    let original = std::fs::read_to_string(s.dir().join("audit.jsonl")).expect("log");
    let lines: Vec<&str> = original.lines().collect();
    let join = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    let owned = || lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();

    // A decision rewritten: the line no longer matches its own hash.
    let mut edited = owned();
    assert!(edited[2].contains(r#""decision":"allow""#));
    edited[2] = edited[2].replace(r#""decision":"allow""#, r#""decision":"deny""#);
    expect_broken(&s.relay, &join(&edited), 3, "was changed");
    // Changed and re-sealed: the next line names another hash for it.
    let mut resealed = owned();
    resealed[2] = reseal(&resealed[2].replace("alice@x", "mallory@x"));
    expect_broken(&s.relay, &join(&resealed), 3, "changed or replaced");
    // A line removed.
    let mut removed = owned();
    removed.remove(3);
    expect_broken(&s.relay, &join(&removed), 4, "missing");
    // Two lines swapped.
    let mut swapped = owned();
    swapped.swap(4, 5);
    expect_broken(&s.relay, &join(&swapped), 5, "missing");
    // The last two lines removed: audit.head knows how far the relay wrote.
    expect_broken(
        &s.relay,
        &join(&owned()[..7]),
        7,
        "2 line(s) removed from the end",
    );
    // Cut in the middle of the last line.
    expect_broken(&s.relay, &original[..original.len() - 20], 9, "incomplete");
    // A line inserted.
    let mut inserted = owned();
    inserted.insert(
        6,
        r#"{"time":"2026-01-01T00:00:00Z","decision":"allow"}"#.into(),
    );
    expect_broken(&s.relay, &join(&inserted), 7, "no hash");

    // The untouched log verifies again, also given as a file.
    std::fs::write(s.dir().join("audit.jsonl"), &original).expect("restore");
    let log = s.dir().join("audit.jsonl");
    let (code, out, err) = verify(&s.relay, &[&log]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_a_crash_keep_the_chain() {
    let s = setup(&["--audit-rotate-size", "2000"]).await;
    s.calls(12).await;
    settled(&s.dir(), 12).await;
    let files = audit_files(&s.dir());
    assert!(files.len() >= 3, "rotated at 2000 bytes: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).expect("file").len();
        assert!(len <= 2000, "{} is {len} bytes", f.display());
    }
    let (code, out, err) = verify(&s.relay, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "12 line(s) in {} file(s), seq 1..12 from genesis",
            files.len()
        )),
        "{out}"
    );
    // Each file's first line names the last line of the file before it.
    let second = std::fs::read_to_string(&files[1]).expect("second file");
    let first_of_second: serde_json::Value =
        serde_json::from_str(second.lines().next().expect("a line")).expect("json");
    let first = std::fs::read_to_string(&files[0]).expect("first file");
    let last_of_first: serde_json::Value =
        serde_json::from_str(first.lines().last().expect("a line")).expect("json");
    assert_eq!(first_of_second["prev"], last_of_first["hash"]);
    // The query command reads every file.
    let (code, out, err) = s.relay.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 12, "{out}");
    // A rotated file checked on its own: its start is recorded.
    let (code, out, err) = verify(&s.relay, &[&files[1]]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("of an earlier file not given"), "{out}");
    // The last line of a rotated file removed: the next file's first line
    // is named.
    let cut: String = first
        .lines()
        .take(first.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&files[0], cut).expect("write");
    let (code, out, err) = verify(&s.relay, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let name = files[1].file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        err.contains(&format!("{name}:1: ")) && err.contains("missing"),
        "{err}"
    );
    std::fs::write(&files[0], &first).expect("restore");

    // A crash in the middle of a write leaves a torn last line; the relay
    // started again chains past it.
    let Setup {
        relay,
        _agent,
        _up,
        token,
        client,
    } = s;
    let RelayProc {
        mut proc,
        addr,
        state,
        extra_args,
        ..
    } = relay;
    proc.kill().await;
    drop(proc);
    let live = state.path().join("audit.jsonl");
    let mut log = std::fs::read(&live).expect("log");
    log.extend_from_slice(br#"{"time":"2026-12-06T07:00:00.000Z","request_id":"#);
    std::fs::write(&live, &log).expect("torn line");
    let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let relay = RelayProc::start_with(state, &addr.to_string(), &extra).await;
    let s = Setup {
        relay,
        _agent,
        _up,
        token,
        client,
    };
    // Before the relay writes again the log ends torn: the cut is reported.
    let (code, _, err) = verify(&s.relay, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(
        s.client.get(&s.relay.route_url("demo"), None).await.status,
        401
    );
    settled(&s.dir(), 13).await;
    let (code, out, err) = verify(&s.relay, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("seq 1..13") && out.contains("torn line"),
        "{out}"
    );
}
