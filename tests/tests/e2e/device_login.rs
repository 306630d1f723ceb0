//! `agent login`: the device authorization grant (RFC 8628) between the real
//! agent and relay binaries, approved through the relay's `/device` pages by
//! a person signed in with a local account; then `agent connect` with the
//! stored credential and no --token. And the grant's errors, by their RFC
//! names: authorization_pending, slow_down, access_denied, expired_token.

use std::time::{Duration, Instant};

use e2e::browser::{add_user, hidden, location, Browser};
use e2e::procs::{bin, Proc};
use e2e::{RelayProc, TempDir};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";

/// Signs the browser in at /device (no code yet).
async fn sign_in(b: &mut Browser, code: &str) -> String {
    let page = b.get(&format!("/device?user_code={code}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("Sign in an agent"), "{}", page.text());
    let a = b
        .form(
            "/device/login",
            &[
                ("csrf", &hidden(&page.text(), "csrf")),
                ("user_code", code),
                ("email", EMAIL),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text());
    location(&a)
}

/// Approves (or denies) `code` in a signed-in browser.
async fn decide(b: &mut Browser, code: &str, decision: &str) -> e2e::client::Answer {
    let page = b.get(&format!("/device?user_code={code}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    assert!(body.contains("Approve this agent?"), "{body}");
    b.form(
        "/device/approve",
        &[
            ("csrf", &hidden(&body, "csrf")),
            ("user_code", &hidden(&body, "user_code")),
            ("decision", decision),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_login_stores_a_credential_that_connect_uses() {
    let relay = RelayProc::start(&["--device-poll-interval", "1s"]).await;
    add_user(&relay, EMAIL, PASSWORD);
    let home = TempDir::new("login-home");
    let config = home.path().join("config");
    let config_s = config.display().to_string();
    let envs = [("XDG_CONFIG_HOME", config_s.as_str())];

    let mut login = Proc::spawn(
        "agent-login",
        &bin("agent"),
        &[
            "login".into(),
            "--relay".into(),
            relay.url(),
            "--ca".into(),
            relay.ca().display().to_string(),
        ],
        &envs,
    );
    let line = login
        .wait_stdout("enter the code:", Duration::from_secs(20))
        .await;
    let code = line.rsplit(' ').next().expect("code").to_owned();
    assert_eq!(code.len(), 9, "{line}");
    let open = login.wait_stdout("(or open ", Duration::from_secs(5)).await;
    let complete = open
        .trim_start_matches("(or open ")
        .trim_end_matches(')')
        .to_owned();
    assert_eq!(complete, format!("{}/device?user_code={code}", relay.url()));

    // The person: opens the link, signs in, approves.
    let mut b = Browser::new(&relay);
    let next = sign_in(&mut b, &code).await;
    assert_eq!(next, format!("/device?user_code={code}"));
    let done = decide(&mut b, &code, "approve").await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("Agent approved"), "{}", done.text());

    assert_eq!(login.wait_exit(Duration::from_secs(30)).await, Some(0));
    let out = login.stdout.lock().expect("lock").join("\n");
    assert!(
        out.contains(&format!("signed in to {} as {EMAIL}", relay.url())),
        "{out}"
    );
    // The credential: 0600, keyed by the relay, an agent token of Alice's.
    let file = config.join("drawbridge").join("credentials.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("credentials file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
    let stored = &v["relays"][relay.url()];
    assert!(
        stored["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("dbat_")),
        "{v}"
    );
    assert_eq!(stored["owner"], EMAIL, "{v}");
    let (_, tokens, _) = relay.admin(&["token", "list", "--json"]);
    assert!(
        tokens.contains(&format!("\"owner\":\"{EMAIL}\"")) && tokens.contains("agent login"),
        "{tokens}"
    );

    // `agent connect` with no --token (nor --ca-cert: remembered) serves a
    // route owned by Alice, and a request through it works.
    let dir = TempDir::new("login-db");
    let db = dir.path().join("demo.db").display().to_string();
    let mut connect = Proc::spawn(
        "agent",
        &bin("agent"),
        &[
            "connect".into(),
            "--relay".into(),
            relay.url(),
            "--route".into(),
            "db".into(),
            "--sqlite".into(),
            db,
        ],
        &envs,
    );
    connect
        .wait_stdout("is live at", Duration::from_secs(30))
        .await;
    let (_, routes, _) = relay.admin(&["route", "list"]);
    assert!(routes.contains(EMAIL), "{routes}");
    let client = e2e::mcp::connect(
        &relay.route_url("db"),
        &relay.ca(),
        &relay.token(EMAIL, true),
    )
    .await;
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "read_query"), "{tools:?}");
    client.cancel().await.expect("close");

    // Without a stored credential: a clear error.
    let other = TempDir::new("login-none");
    let other_s = other.path().display().to_string();
    let mut bare = Proc::spawn(
        "agent-bare",
        &bin("agent"),
        &[
            "connect".into(),
            "--relay".into(),
            relay.url(),
            "--ca-cert".into(),
            relay.ca().display().to_string(),
            "--http".into(),
            "http://127.0.0.1:9/".into(),
        ],
        &[("XDG_CONFIG_HOME", other_s.as_str())],
    );
    assert_eq!(bare.wait_exit(Duration::from_secs(20)).await, Some(1));
    let err = bare.stderr_text();
    assert!(
        err.contains(&format!("run `agent login --relay {}`", relay.url())),
        "{err}"
    );
}

/// One poll of the token endpoint: (status, error code).
async fn poll(b: &mut Browser, device_code: &str) -> (u16, String) {
    let a = b
        .form(
            "/oauth/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", "drawbridge-agent"),
            ],
        )
        .await;
    let error = a.json()["error"].as_str().unwrap_or_default().to_owned();
    (a.status.as_u16(), error)
}

/// A device authorization: (device_code, user_code).
async fn start(b: &mut Browser) -> (String, String) {
    let a = b
        .form(
            "/oauth/device_authorization",
            &[("client_id", "drawbridge-agent")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["interval"], 1, "{v}");
    (
        v["device_code"].as_str().expect("device_code").to_owned(),
        v["user_code"].as_str().expect("user_code").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_grant_errors_are_the_ones_rfc_8628_names() {
    let relay =
        RelayProc::start(&["--device-poll-interval", "1s", "--device-code-ttl", "5s"]).await;
    add_user(&relay, EMAIL, PASSWORD);
    let mut b = Browser::new(&relay);

    // Discovery does not advertise it to MCP clients: they cannot use it.
    let meta = b
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert!(
        meta.get("device_authorization_endpoint").is_none(),
        "{meta}"
    );
    assert!(!meta["grant_types_supported"]
        .as_array()
        .expect("grant types")
        .iter()
        .any(|g| g == "urn:ietf:params:oauth:grant-type:device_code"));
    // Only `agent login` uses it.
    let a = b
        .form("/oauth/device_authorization", &[("client_id", "someone")])
        .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (http::StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    // The code that will expire, requested first.
    let (expiring, _) = start(&mut b).await;
    let expiring_since = Instant::now();

    // Pending, then too fast: slow_down.
    let (device, user) = start(&mut b).await;
    assert_eq!(
        poll(&mut b, &device).await,
        (400, "authorization_pending".into())
    );
    assert_eq!(poll(&mut b, &device).await, (400, "slow_down".into()));

    // A wrong code on the page says so (the browser signs in first).
    let next = sign_in(&mut b, "").await;
    assert_eq!(next, "/device?user_code=");
    let wrong = if user.starts_with('B') {
        "CCCC-CCCC"
    } else {
        "BBBB-BBBB"
    };
    let page = b.get(&format!("/device?user_code={wrong}")).await;
    assert_eq!(page.status, 400, "{}", page.text());
    assert!(
        page.text()
            .contains(&format!("No agent is waiting with the code {wrong}")),
        "{}",
        page.text()
    );
    let page = b.get("/device?user_code=not-a-code").await;
    assert_eq!(page.status, 400);
    assert!(page.text().contains("is not a code"), "{}", page.text());

    // Denied: access_denied, and the code cannot be approved after.
    let denied = decide(&mut b, &user, "deny").await;
    assert_eq!(denied.status, 200, "{}", denied.text());
    assert!(denied.text().contains("Agent denied"), "{}", denied.text());
    assert_eq!(poll(&mut b, &device).await, (400, "access_denied".into()));
    let page = b.get(&format!("/device?user_code={user}")).await;
    assert_eq!(page.status, 400, "{}", page.text());

    // A form without the session's CSRF token is refused.
    let (_, user2) = start(&mut b).await;
    let forged = b
        .form(
            "/device/approve",
            &[
                ("csrf", "forged"),
                ("user_code", &user2),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text());

    // Expired before anyone approved it: expired_token.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(expiring_since.elapsed())).await;
    assert_eq!(poll(&mut b, &expiring).await, (400, "expired_token".into()));
    // A device code nobody issued.
    assert_eq!(poll(&mut b, "0123").await, (400, "invalid_grant".into()));
}
