//! Relay nodes on one PostgreSQL database (`--database-url`): what one node
//! (or an admin command) revokes is refused by every node within a second,
//! and the agents of a revoked token are told to go by every node.

use std::time::{Duration, Instant};

use e2e::cluster::start_nodes;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

/// Revocation reaches every node within this (the bound).
const BOUND: Duration = Duration::from_secs(1);

/// Polls `node`'s route `demo` with `token` until it answers `status`;
/// the time it took.
async fn until_status(
    client: &HttpsClient,
    node: &RelayProc,
    token: &str,
    status: u16,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let a = client
            .get(&format!("{}/echo", node.route_url("demo")), Some(token))
            .await;
        if a.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} still answers {} ({}) after {within:?}",
            node.url(),
            a.status,
            a.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_refused_by_the_other_within_a_second() {
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let up = Upstream::start("u").await;
    // Tokens made by an admin command on node A's database.
    let agent_token = a.token("alice@x", false);
    let agent_id = a.last_token_id();
    let client_token = a.token("alice@x", true);
    let client_id = a.last_token_id();
    // One agent per node (one session each), the same token.
    let mut agents = Vec::new();
    for node in &nodes {
        agents.push(AgentProc::start(node, &agent_token, "demo", &up.url(), "auto").await);
    }
    let client = HttpsClient::new(&a.ca(), false);
    for node in &nodes {
        let answer = client
            .get(
                &format!("{}/echo", node.route_url("demo")),
                Some(&client_token),
            )
            .await;
        assert_eq!(answer.status, 200, "{}: {}", node.url(), answer.text());
    }

    let (code, _, err) = a.admin(&["token", "revoke", &client_id]);
    assert_eq!(code, 0, "{err}");
    let delay = until_status(&client, b, &client_token, 401, BOUND).await;
    println!("client token revoked on node A: refused by node B after {delay:?}");

    let (code, _, err) = a.admin(&["token", "revoke", &agent_id]);
    let revoked = Instant::now();
    assert_eq!(code, 0, "{err}");
    for (i, agent) in agents.iter_mut().enumerate() {
        let left = BOUND.saturating_sub(revoked.elapsed()) + Duration::from_secs(1);
        let exit = agent.proc.wait_exit(left).await;
        println!(
            "agent token revoked: the agent of node {} left after {:?}",
            i,
            revoked.elapsed()
        );
        assert!(exit.is_some_and(|c| c != 0), "agent {i} still runs");
        assert!(
            agent.proc.stderr_text().contains("revoked"),
            "{}",
            agent.proc.stderr_text()
        );
    }
    // Told by each node (the token's owner, not its client, is gone: 503).
    let other = a.token("alice@x", true);
    for node in &nodes {
        let answer = client.get(&node.route_url("demo"), Some(&other)).await;
        assert_eq!(answer.status, 503, "{}", answer.text());
    }
}

/// A URL that is not PostgreSQL's, and a database that does not answer,
/// are clear errors that name the host and port but never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unreachable_databases_are_clear_errors() {
    let state = e2e::TempDir::new("relay");
    let run = |url: &str| {
        let out = std::process::Command::new(e2e::procs::bin("relay"))
            .args(["token", "list", "--state-dir"])
            .arg(state.path())
            .env("DRAWBRIDGE_DATABASE_URL", url)
            .output()
            .expect("run relay");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("mysql://u:hunter2@127.0.0.1/x");
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let err = run(&format!(
        "postgres://u:hunter2@127.0.0.1:{port}/x?sslmode=disable"
    ));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // On the command line, a password gets the warning of every secret.
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["token", "list", "--state-dir"])
        .arg(state.path())
        .arg("--database-url")
        .arg(format!(
            "postgres://u:hunter2@127.0.0.1:{port}/x?sslmode=disable"
        ))
        .output()
        .expect("run relay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("visible to every user"), "{err}");
    assert!(err.contains("DRAWBRIDGE_DATABASE_URL"), "{err}");
}

/// An OAuth access token (the real sign-in on node A), and a share grant
/// made through node A's grants API: revoked through the other node (the
/// account removed by an admin command on node B's database; the grant
/// revoked on node A, watched on node B), refused within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_and_grants_revoked_on_one_node_are_refused_by_the_other_within_a_second() {
    const ALICE: &str = "alice@x";
    const BOB: &str = "bob@x";
    const PASSWORD: &str = "correct horse battery";
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let up = Upstream::start("u").await;
    let agent_token = a.token(ALICE, false);
    let mut agents = Vec::new();
    for node in &nodes {
        agents.push(AgentProc::start(node, &agent_token, "demo", &up.url(), "auto").await);
    }
    let client = HttpsClient::new(&a.ca(), false);

    // OAuth: signed in on A (its token names A's route URL), the account
    // removed on B.
    e2e::browser::add_user(a, ALICE, PASSWORD);
    let access = e2e::browser::oauth_access_token(a, ALICE, PASSWORD, "demo").await;
    until_status(&client, a, &access, 200, BOUND).await;
    let (code, _, err) = b.admin(&["user", "remove", ALICE]);
    assert_eq!(code, 0, "{err}");
    let delay = until_status(&client, a, &access, 401, BOUND).await;
    println!("OAuth token revoked on node B (user removed): refused by node A after {delay:?}");

    // A share grant: made on A (agent share), used on B, revoked on A.
    let bob = a.token(BOB, true);
    until_status(&client, b, &bob, 403, BOUND).await;
    let config = crate::sharing::logged_in(a, ALICE, &agent_token);
    let (code, out, err) = crate::sharing::share(&config, &["demo", "--with", BOB]).await;
    assert_eq!(code, 0, "{out}{err}");
    let grant = crate::sharing::grant_id(&out);
    let delay = until_status(&client, b, &bob, 200, BOUND).await;
    println!("grant made on node A: honoured by node B after {delay:?}");
    let (code, out, err) = crate::sharing::share(&config, &["--revoke", &grant]).await;
    assert_eq!(code, 0, "{out}{err}");
    let delay = until_status(&client, b, &bob, 403, BOUND).await;
    println!("grant revoked on node A: refused by node B after {delay:?}");
}
