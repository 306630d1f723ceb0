//! One owner claims at most `--max-routes-per-owner` route names: an agent
//! offering one more new name is refused with a message saying so, and so is
//! a grant for a new name; the routes the owner holds keep working, other
//! owners are not affected, and releasing a name frees a place.

use std::time::Duration;

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

async fn refused(relay: &RelayProc, token: &str, route: &str, up: &Upstream) -> String {
    let mut agent = AgentProc::spawn(relay, token, route, &up.url(), "auto", &[]);
    let code = agent.proc.wait_exit(Duration::from_secs(20)).await;
    let err = agent.proc.stderr_text();
    assert!(
        code.is_some_and(|c| c != 0),
        "not refused ({code:?}): {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_claims_at_most_the_configured_number_of_routes() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--max-routes-per-owner", "2"]).await;
    let alice = relay.token("alice@x", false);
    let _a = AgentProc::start(&relay, &alice, "a", &up.url(), "auto").await;
    let _b = AgentProc::start(&relay, &alice, "b", &up.url(), "auto").await;

    // A third name: refused, and the agent says why.
    let err = refused(&relay, &alice, "c", &up).await;
    assert!(
        err.contains("route 'c' is new, but alice@x already holds 2 routes on this relay")
            && err.contains("--max-routes-per-owner"),
        "{err}"
    );
    // Nor through a grant (agent share claims the route too).
    let client = HttpsClient::new(&relay.ca(), false);
    let grant = client
        .fetch(
            http::Request::builder()
                .method("POST")
                .uri(format!("{}/api/routes/c/grants", relay.url()))
                .header("authorization", format!("Bearer {alice}"))
                .header("content-type", "application/json")
                .body(e2e::client::full_body(r#"{"with":"bob@x"}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(grant.status, 403, "{}", grant.text());
    assert_eq!(grant.json()["error"], "too_many_routes", "{}", grant.text());

    // Names already held still serve, from another replica too.
    let _a2 = AgentProc::start(&relay, &alice, "a", &up.url(), "auto").await;
    let client_token = relay.token("alice@x", true);
    let a = client
        .call(
            "GET",
            &format!("{}/echo", relay.route_url("a")),
            Some(&client_token),
            "",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // Another owner is not affected.
    let _bob = AgentProc::start(&relay, &relay.token("bob@x", false), "c", &up.url(), "auto").await;
    // Releasing a name frees a place.
    let (code, _, err) = relay.admin(&["route", "release", "b"]);
    assert_eq!(code, 0, "{err}");
    let _d = AgentProc::start(&relay, &alice, "d", &up.url(), "auto").await;
    let (_, routes, _) = relay.admin(&["route", "list"]);
    let alices = routes.lines().filter(|l| l.ends_with("alice@x")).count();
    assert_eq!(alices, 2, "{routes}");
}
