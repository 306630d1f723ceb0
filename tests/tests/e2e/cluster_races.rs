//! Races between relay nodes on one PostgreSQL database: what one node may
//! win, exactly one wins.

use std::time::Duration;

use e2e::browser::Browser;
use e2e::cluster::start_nodes;
use e2e::{AgentProc, Upstream};

/// Two owners' agents claim one new route at once, on two nodes: one
/// claim wins, the other agent is told the route belongs to another owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_route_claimed_by_two_owners_on_two_nodes_has_one_owner() {
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, 2, &[]).await;
    let up = Upstream::start("u").await;
    for round in 0..4 {
        let route = format!("race{round}");
        let alice = nodes[0].token("alice@x", false);
        let bob = nodes[1].token("bob@x", false);
        let mut agents = [
            AgentProc::spawn(&nodes[0], &alice, &route, &up.url(), "auto", &[]),
            AgentProc::spawn(&nodes[1], &bob, &route, &up.url(), "auto", &[]),
        ];
        let mut live = 0;
        let mut refused = 0;
        for agent in &mut agents {
            let said = agent
                .proc
                .try_wait_stdout("is live at", Duration::from_secs(10))
                .await;
            if said.is_some() {
                live += 1;
            } else {
                assert_ne!(agent.proc.wait_exit(Duration::from_secs(10)).await, Some(0));
                let err = agent.proc.stderr_text();
                assert!(err.contains("belongs to another owner"), "{err}");
                refused += 1;
            }
        }
        assert_eq!((live, refused), (1, 1), "round {round}");
        let (_, out, _) = nodes[1].admin(&["route", "list"]);
        assert_eq!(out.matches(route.as_str()).count(), 1, "{out}");
    }
}

/// 32 authorization codes, each redeemed on two nodes at once: one token
/// set each. Then their 32 refresh tokens, each sent to three nodes at
/// once: one rotation each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_and_refresh_tokens_redeemed_on_several_nodes_at_once_have_one_winner() {
    const ALICE: &str = "alice@x";
    const PASSWORD: &str = "correct horse battery";
    const N: usize = 32;
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, 3, &[]).await;
    let up = Upstream::start("u").await;
    let agent_token = nodes[0].token(ALICE, false);
    let _agent = AgentProc::start(&nodes[0], &agent_token, "demo", &up.url(), "auto").await;
    e2e::browser::add_user(&nodes[0], ALICE, PASSWORD);
    let mut codes = Vec::new();
    // Signed in on the first node (its URL is the cluster's name, the
    // tokens' audience), from several addresses (registrations are
    // limited per address).
    for i in 0..N {
        let from = std::net::IpAddr::from([127, 0, 0, 10 + (i / 8) as u8]);
        codes.push(
            e2e::browser::oauth_code_from(&nodes[0], Some(from), ALICE, PASSWORD, "demo", "mcp")
                .await,
        );
    }
    // Each code to nodes 0 and 1 at once.
    let redeem = codes.iter().map(|grant| {
        let nodes = &nodes;
        async move {
            let form = grant.token_form();
            let mut b0 = Browser::new(&nodes[0]);
            let mut b1 = Browser::new(&nodes[1]);
            let (x, y) = tokio::join!(
                b0.form("/oauth/token", &form),
                b1.form("/oauth/token", &form)
            );
            [x, y]
        }
    });
    for (i, answers) in futures::future::join_all(redeem)
        .await
        .into_iter()
        .enumerate()
    {
        let won: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
        assert_eq!(
            won.len(),
            1,
            "code {i}: {:?}",
            answers.iter().map(|a| a.text()).collect::<Vec<_>>()
        );
        let lost = answers.iter().find(|a| a.status != 200).expect("a loser");
        assert_eq!(lost.status, 400, "{}", lost.text());
        assert_eq!(lost.json()["error"], "invalid_grant", "{}", lost.text());
    }
    println!("{N} codes, each redeemed on two nodes at once: one token set each");
    // A code redeemed twice revokes what it gave (RFC 9700 §4.5): the
    // refresh tokens raced for come from codes redeemed once.
    let mut refresh_tokens = Vec::new();
    for i in 0..N {
        let from = std::net::IpAddr::from([127, 0, 0, 20 + (i / 8) as u8]);
        let grant =
            e2e::browser::oauth_code_from(&nodes[0], Some(from), ALICE, PASSWORD, "demo", "mcp")
                .await;
        let a = Browser::new(&nodes[i % 3])
            .form("/oauth/token", &grant.token_form())
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        refresh_tokens.push((
            grant.client_id.clone(),
            a.json()["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        ));
    }
    // Each refresh token to the three nodes at once.
    let rotate = refresh_tokens.iter().map(|(client_id, refresh)| {
        let nodes = &nodes;
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", client_id.as_str()),
            ];
            let mut b: Vec<Browser> = nodes.iter().map(Browser::new).collect();
            let [b0, b1, b2] = &mut b[..] else {
                unreachable!()
            };
            let (x, y, z) = tokio::join!(
                b0.form("/oauth/token", &form),
                b1.form("/oauth/token", &form),
                b2.form("/oauth/token", &form)
            );
            [x, y, z]
        }
    });
    for (i, answers) in futures::future::join_all(rotate)
        .await
        .into_iter()
        .enumerate()
    {
        let won = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(
            won,
            1,
            "refresh token {i}: {:?}",
            answers.iter().map(|a| a.text()).collect::<Vec<_>>()
        );
        for lost in answers.iter().filter(|a| a.status != 200) {
            assert_eq!(lost.status, 400, "{}", lost.text());
            assert_eq!(lost.json()["error"], "invalid_grant", "{}", lost.text());
        }
    }
    println!("{N} refresh tokens, each sent to three nodes at once: one rotation each");
}
