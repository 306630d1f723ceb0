//! Isolation under load (issue 7): many concurrent requests across many
//! routes and owners, with agents joining and leaving meanwhile. Every answer
//! must come from its own route's upstream and carry its own request's body
//! back, byte for byte; a caller never reaches another owner's route.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

const ROUTES: usize = 20;
const OWNERS: usize = 3;
const REQUESTS: usize = 1000;
/// Routes whose second agent keeps connecting and disconnecting.
const CHURNED: usize = 5;

fn owner(route: usize) -> String {
    format!("owner{}@example.com", route % OWNERS)
}

fn route_name(route: usize) -> String {
    format!("iso-{route}")
}

/// A body unique to request `i`, of a size that varies with `i` (ASCII so
/// the echo upstream gives it back unchanged in its JSON).
fn payload(i: usize) -> String {
    let len = 64 + (i * 7919) % 8000;
    let mut s = format!("request-{i}:");
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(b'a' + (x % 26) as u8));
    }
    s
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    misroutes: AtomicUsize,
    cross_owner_refused: AtomicUsize,
    cross_owner_leaks: AtomicUsize,
    churn_errors: AtomicUsize,
    other_errors: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_across_twenty_routes_and_three_owners_never_cross() {
    // Every caller and agent is 127.0.0.1, and the HTTP/1.1 client opens a
    // connection per concurrent request.
    let relay = RelayProc::start(&["--max-connections-per-ip", "0"]).await;
    let agent_tokens: Vec<String> = (0..OWNERS).map(|o| relay.token(&owner(o), false)).collect();
    let client_tokens: Vec<String> = (0..OWNERS).map(|o| relay.token(&owner(o), true)).collect();

    let mut upstreams = Vec::new();
    let mut agents = Vec::new();
    for r in 0..ROUTES {
        let up = Upstream::start(&format!("r{r}")).await;
        let transport = if r % 2 == 0 { "quic" } else { "tcp" };
        agents.push(
            AgentProc::start(
                &relay,
                &agent_tokens[r % OWNERS],
                &route_name(r),
                &up.url(),
                transport,
            )
            .await,
        );
        upstreams.push(up);
    }
    // The replicas' upstreams answer with their own ids ("r<route>-b"), so a
    // reply from a replica is still recognisably its route's.
    let mut replica_upstreams = Vec::new();
    for r in 0..CHURNED {
        replica_upstreams.push(Upstream::start(&format!("r{r}-b")).await);
    }

    let stop_churn = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop_churn.clone();
        let urls: Vec<String> = replica_upstreams.iter().map(Upstream::url).collect();
        let tokens = agent_tokens.clone();
        let relay_url = relay.url();
        let ca = relay.ca();
        let relay_ref = RelayRef { url: relay_url, ca };
        tokio::spawn(async move {
            let mut cycles = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for (r, url) in urls.iter().enumerate() {
                    let mut a = relay_ref.spawn_agent(&tokens[r % OWNERS], &route_name(r), url);
                    a.wait_live().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    a.proc.kill().await;
                    cycles += 1;
                }
            }
            cycles
        })
    };

    let clients = Arc::new([
        HttpsClient::new(&relay.ca(), true),
        HttpsClient::new(&relay.ca(), true),
        HttpsClient::new(&relay.ca(), false),
    ]);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let route = i % ROUTES;
        // One round of requests (one per route) in ten carries another
        // owner's tokens.
        let cross = (i / ROUTES) % 10 == 3;
        let token = if cross {
            client_tokens[(route + 1) % OWNERS].clone()
        } else {
            client_tokens[route % OWNERS].clone()
        };
        let url = format!("{}/echo/{i}", relay.route_url(&route_name(route)));
        let clients = clients.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let body = payload(i);
            let client = &clients[i % clients.len()];
            let answer = client.call("POST", &url, Some(&token), body.clone()).await;
            let status = answer.status.as_u16();
            if cross {
                if status == 200 {
                    tally.cross_owner_leaks.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "LEAK: request {i} to route {route} with another owner's token: {}",
                        answer.text()
                    );
                } else {
                    tally.cross_owner_refused.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            if status != 200 {
                if route < CHURNED && matches!(status, 502..=504) {
                    // The replica it went to was killed mid-request: a
                    // clear error, not a misroute.
                    tally.churn_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.other_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("request {i} to route {route}: {status} {}", answer.text());
                }
                return;
            }
            let v: serde_json::Value = match serde_json::from_slice(&answer.body) {
                Ok(v) => v,
                Err(_) => {
                    tally.misroutes.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "MISROUTE: request {i}: not the echo's JSON: {}",
                        answer.text()
                    );
                    return;
                }
            };
            let id = v["id"].as_str().unwrap_or("");
            let from_own_route = id == format!("r{route}") || id == format!("r{route}-b");
            let own_body = v["body"].as_str() == Some(body.as_str());
            let own_path = v["path"].as_str() == Some(format!("/echo/{i}").as_str());
            if from_own_route && own_body && own_path {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.misroutes.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "MISROUTE: request {i} for route {route} answered by {id:?}, path {}, body {}",
                    v["path"],
                    if own_body { "its own" } else { "NOT its own" }
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    stop_churn.store(true, Ordering::Relaxed);
    let cycles = churn.await.expect("churn task");

    let get = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let same_owner = REQUESTS - REQUESTS / 10;
    println!(
        "isolation: {REQUESTS} requests, {ROUTES} routes, {OWNERS} owners, {cycles} replica \
         connect/disconnect cycles: ok {}, misroutes {}, cross-owner refused {} (leaked {}), \
         errors from killed replicas {}, other errors {}",
        get(&tally.ok),
        get(&tally.misroutes),
        get(&tally.cross_owner_refused),
        get(&tally.cross_owner_leaks),
        get(&tally.churn_errors),
        get(&tally.other_errors),
    );
    assert_eq!(get(&tally.misroutes), 0, "misroutes");
    assert_eq!(
        get(&tally.cross_owner_leaks),
        0,
        "another owner's route answered"
    );
    assert_eq!(get(&tally.cross_owner_refused), REQUESTS / 10);
    assert_eq!(
        get(&tally.other_errors),
        0,
        "errors outside the churned routes"
    );
    assert_eq!(get(&tally.ok) + get(&tally.churn_errors), same_owner);
    assert!(cycles > 0, "no agent joined or left during the run");
    // Every route's own upstream was reached (nothing was routed elsewhere).
    for (r, up) in upstreams.iter().enumerate() {
        assert!(
            up.hits.load(Ordering::Relaxed) > 0,
            "route {r} never reached its upstream"
        );
    }
    drop(agents);
}

/// What the churn task needs of the relay (the relay guard stays with the test).
struct RelayRef {
    url: String,
    ca: std::path::PathBuf,
}

impl RelayRef {
    fn spawn_agent(&self, token: &str, route: &str, upstream: &str) -> AgentProc {
        let args: Vec<String> = [
            "connect",
            "--relay",
            &self.url,
            "--ca-cert",
            &self.ca.display().to_string(),
            "--route",
            route,
            "--transport",
            "quic",
            "--http",
            upstream,
            "--plain-http",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        AgentProc {
            proc: e2e::procs::Proc::spawn(
                "agent-replica",
                &e2e::procs::bin("agent"),
                &args,
                &[("DRAWBRIDGE_TOKEN", token)],
            ),
            url: String::new(),
        }
    }
}
