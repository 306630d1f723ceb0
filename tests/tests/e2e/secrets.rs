//! Secrets stay off the command line: `agent connect` reads its token from
//! `--token-file` or `DRAWBRIDGE_TOKEN_FILE` (or `DRAWBRIDGE_TOKEN`), and
//! warns when `--token` is given on the command line; `relay serve` reads
//! the GitHub (and OpenID Connect) client secret from the environment or
//! its config file, and warns when it is given as a flag.

use std::sync::Arc;
use std::time::Duration;

use e2e::github_standin::{GitHubStandIn, GitHubUser};
use e2e::procs::{bin, Proc};
use e2e::{RelayProc, TempDir};
use serde_json::json;

const OWNER: &str = "owner@example.com";
const WARNING: &str = "on the command line is visible to every user of this machine";

/// `agent connect` serving route `route` from a fresh SQLite database, with
/// `token_args` and `envs`.
fn agent(
    relay: &RelayProc,
    dir: &TempDir,
    route: &str,
    token_args: &[&str],
    envs: &[(&str, &str)],
) -> Proc {
    let db = dir.path().join(format!("{route}.db")).display().to_string();
    let mut args: Vec<String> = [
        "connect",
        "--relay",
        &relay.url(),
        "--ca-cert",
        &relay.ca().display().to_string(),
        "--route",
        route,
        "--sqlite",
        &db,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(token_args.iter().map(|s| s.to_string()));
    Proc::spawn("agent", &bin("agent"), &args, envs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_token_comes_from_a_file_or_the_environment() {
    let relay = RelayProc::start(&[]).await;
    let token = relay.token(OWNER, false);
    let dir = TempDir::new("secrets");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).expect("write the token file");
    let file = file.display().to_string();

    // --token-file.
    let mut a = agent(&relay, &dir, "from-file", &["--token-file", &file], &[]);
    a.wait_stdout("is live at", Duration::from_secs(30)).await;
    // DRAWBRIDGE_TOKEN_FILE.
    let mut b = agent(
        &relay,
        &dir,
        "from-env-file",
        &[],
        &[("DRAWBRIDGE_TOKEN_FILE", &file)],
    );
    b.wait_stdout("is live at", Duration::from_secs(30)).await;
    // DRAWBRIDGE_TOKEN.
    let mut c = agent(
        &relay,
        &dir,
        "from-env",
        &[],
        &[("DRAWBRIDGE_TOKEN", &token)],
    );
    c.wait_stdout("is live at", Duration::from_secs(30)).await;
    for p in [&a, &b, &c] {
        assert!(!p.stderr_text().contains(WARNING), "{}", p.stderr_text());
    }
    // --token still works, with a warning that says what to use instead.
    let mut d = agent(&relay, &dir, "from-flag", &["--token", &token], &[]);
    d.wait_stdout("is live at", Duration::from_secs(30)).await;
    let err = d.stderr_text();
    assert!(err.contains(&format!("--token {WARNING}")), "{err}");
    assert!(err.contains("--token-file"), "{err}");

    // An empty file, or both forms at once, is refused with a clear error.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let empty = empty.display().to_string();
    let mut e = agent(&relay, &dir, "empty", &["--token-file", &empty], &[]);
    assert_eq!(e.wait_exit(Duration::from_secs(20)).await, Some(1));
    assert!(e.stderr_text().contains("is empty"), "{}", e.stderr_text());
    let mut f = agent(
        &relay,
        &dir,
        "both",
        &["--token-file", &file, "--token", &token],
        &[],
    );
    assert_eq!(f.wait_exit(Duration::from_secs(20)).await, Some(2));
    assert!(
        f.stderr_text().contains("cannot be used with"),
        "{}",
        f.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_client_secret_comes_from_the_environment_or_the_config_file() {
    const CLIENT_ID: &str = "Iv1.e2e";
    const SECRET: &str = "github-e2e-secret-4567";
    let gh = GitHubStandIn::start(CLIENT_ID, SECRET).await;
    gh.set_user(GitHubUser {
        emails: json!([{"email": "alice@example.com", "primary": true, "verified": true,
            "visibility": "private"}]),
        orgs: json!([]),
        teams: json!([]),
    });
    let gh_url = gh.url();
    let flags = [
        "--github-client-id",
        CLIENT_ID,
        "--github-base-url",
        &gh_url,
        "--github-api-url",
        &gh_url,
        "--upstream-dev-allow-http-loopback",
    ];
    let sign_in = async |relay: &RelayProc| {
        e2e::upstream_sign_in::sign_in(relay, "Sign in with GitHub", "db", async |authorize| {
            let a = e2e::oidc_provider::plain("GET", &authorize, "text/plain", String::new()).await;
            assert_eq!(a.status, 302, "{}", a.body);
            a.location.expect("the stand-in's redirect")
        })
        .await
        .token()
    };

    // The environment.
    let state = Arc::new(TempDir::new("relay"));
    let config_dir = TempDir::new("config");
    let config = config_dir.path().join("relay.toml");
    let base = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = {:?}\n",
        state.path().display().to_string()
    );
    std::fs::write(&config, format!("{base}[tls]\nself_signed = true\n")).expect("write");
    let relay = RelayProc::start_with_config(
        state,
        &config,
        &flags,
        &[("DRAWBRIDGE_GITHUB_CLIENT_SECRET", SECRET)],
    )
    .await;
    assert!(sign_in(&relay).await.starts_with("dboa_"));
    assert!(!relay.proc.stderr_text().contains(WARNING));
    drop(relay);

    // The config file (kept 0600 by its owner).
    let state = Arc::new(TempDir::new("relay"));
    let base = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = {:?}\n",
        state.path().display().to_string()
    );
    std::fs::write(
        &config,
        format!("{base}[tls]\nself_signed = true\n[oauth]\ngithub_client_secret = {SECRET:?}\n"),
    )
    .expect("write");
    let relay = RelayProc::start_with_config(state, &config, &flags, &[]).await;
    assert!(sign_in(&relay).await.starts_with("dboa_"));
    drop(relay);

    // The flag still works, with a warning.
    let mut with_flag: Vec<&str> = flags.to_vec();
    with_flag.extend(["--github-client-secret", SECRET]);
    let relay = RelayProc::start(&with_flag).await;
    assert!(sign_in(&relay).await.starts_with("dboa_"));
    let err = relay.proc.stderr_text();
    assert!(
        err.contains(&format!("--github-client-secret {WARNING}")),
        "{err}"
    );
    assert!(err.contains("DRAWBRIDGE_GITHUB_CLIENT_SECRET"), "{err}");
    assert!(gh.refusals().is_empty(), "{:?}", gh.refusals());
}
