//! No ghost tunnel after an agent restart: an agent stopped (SIGTERM) and
//! started again at once must not leave its old QUIC session registered, and
//! one killed without a goodbye (SIGKILL) must stop getting requests within
//! about a second.

use std::time::{Duration, Instant};

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

/// Restart cycles with SIGTERM (the issue asks for 50).
const GRACEFUL_CYCLES: usize = 50;
/// Restart cycles with SIGKILL (each may cost a request a second).
const KILL_CYCLES: usize = 10;
/// Requests right after each restart.
const REQUESTS: usize = 4;

struct Figures {
    requests: usize,
    slowest: Duration,
    slow: usize,
    failed: Vec<u16>,
    /// Requests that found a dead tunnel (the relay's log says so).
    found_dead: usize,
}

/// Restarts the agent `cycles` times with `signal` and sends requests
/// (`method`: POST with a body, or GET) right after each new agent is live.
async fn restart_cycles(
    signal: &str,
    method: &str,
    cycles: usize,
    slow_after: Duration,
) -> Figures {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let client_token = relay.token("a@x", true);
    let agent_token = relay.token("a@x", false);
    let client = HttpsClient::new(&relay.ca(), false);
    let url = format!("{}/echo", relay.route_url("demo"));
    let mut agent = AgentProc::start(&relay, &agent_token, "demo", &up.url(), "quic").await;
    let mut figures = Figures {
        requests: 0,
        slowest: Duration::ZERO,
        slow: 0,
        failed: Vec::new(),
        found_dead: 0,
    };
    for cycle in 0..cycles {
        agent.proc.signal(signal);
        let mut next = AgentProc::spawn(&relay, &agent_token, "demo", &up.url(), "quic", &[]);
        next.wait_live().await;
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let status = client
                .call(method, &url, Some(&client_token), body(method))
                .await
                .status;
            let took = t.elapsed();
            figures.requests += 1;
            figures.slowest = figures.slowest.max(took);
            if took > slow_after {
                figures.slow += 1;
                eprintln!("cycle {cycle}: a request took {took:?} ({status})");
            }
            if status != 200 {
                figures.failed.push(status.as_u16());
            }
        }
        agent.proc.wait_exit(Duration::from_secs(15)).await;
        agent = next;
    }
    figures.found_dead = relay
        .proc
        .stderr_text()
        .matches("the agent's tunnel went silent")
        .count();
    figures
}

fn body(method: &str) -> &'static str {
    if method == "GET" {
        ""
    } else {
        "hi"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_and_restarted_agent_leaves_no_ghost_tunnel() {
    let started = Instant::now();
    let f = restart_cycles("TERM", "POST", GRACEFUL_CYCLES, Duration::from_secs(2)).await;
    eprintln!(
        "SIGTERM restarts: {GRACEFUL_CYCLES} cycles, {} requests, slowest {:?}, {} over 2 s, failed {:?}, {} found a dead tunnel ({:?} in all)",
        f.requests,
        f.slowest,
        f.slow,
        f.failed,
        f.found_dead,
        started.elapsed()
    );
    assert!(
        f.failed.is_empty(),
        "no 502 or other failure: {:?}",
        f.failed
    );
    assert_eq!(
        f.slow, 0,
        "no request slower than 2 s (slowest {:?})",
        f.slowest
    );
    // The goodbye arrived every time: no request had to find out that the
    // old tunnel was dead.
    assert_eq!(f.found_dead, 0, "a stopped agent's goodbye was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_stops_getting_requests_within_about_a_second() {
    let started = Instant::now();
    // A request that finds the dead tunnel waits a second for any sign of
    // life, then goes to the new agent: well under 2 s, but the bound is
    // generous for a loaded machine. (Only a request that reads goes to
    // another replica: the silent agent may have run it. A write waits for
    // its agent, see the test below.)
    let f = restart_cycles("KILL", "GET", KILL_CYCLES, Duration::from_secs(4)).await;
    eprintln!(
        "SIGKILL restarts: {KILL_CYCLES} cycles, {} requests, slowest {:?}, {} over 4 s, failed {:?}, {} found a dead tunnel ({:?} in all)",
        f.requests,
        f.slowest,
        f.slow,
        f.failed,
        f.found_dead,
        started.elapsed()
    );
    assert!(
        f.failed.is_empty(),
        "no 502 or other failure: {:?}",
        f.failed
    );
    assert_eq!(f.slow, 0, "slowest {:?}", f.slowest);
    assert!(f.found_dead > 0, "requests found the dead tunnels");
}

/// An agent that is alive but does not acknowledge for a while (its process
/// stopped, as a laptop under heavy load can be): a write sent to it is not
/// sent again to the other replica (it may have run) but waits and gets its
/// answer, once; requests in the meantime go to the other replica; the slow
/// agent keeps its tunnel and takes requests again once heard from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_but_living_agent_runs_a_write_once_and_keeps_its_tunnel() {
    use std::sync::atomic::Ordering;
    let slow_up = Upstream::start("slow").await;
    let other_up = Upstream::start("other").await;
    let relay = RelayProc::start(&[]).await;
    let client_token = relay.token("a@x", true);
    let agent_token = relay.token("a@x", false);
    let client = HttpsClient::new(&relay.ca(), false);
    let url = format!("{}/echo", relay.route_url("demo"));
    let slow = AgentProc::start(&relay, &agent_token, "demo", &slow_up.url(), "quic").await;
    let _other = AgentProc::start(&relay, &agent_token, "demo", &other_up.url(), "quic").await;

    // Round robin: find a POST that the slow agent takes, with it stopped.
    slow.proc.signal("STOP");
    let mut write = None;
    for _ in 0..4 {
        let before = other_up.hits.load(Ordering::Relaxed);
        let (ca, u, t) = (relay.ca(), url.clone(), client_token.clone());
        let task = tokio::spawn(async move {
            HttpsClient::new(&ca, false)
                .call("POST", &u, Some(&t), "write")
                .await
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if task.is_finished() {
            let a = task.await.expect("task");
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(other_up.hits.load(Ordering::Relaxed), before + 1);
            continue;
        }
        write = Some(task);
        break;
    }
    let write = write.expect("one of four POSTs went to the stopped agent");
    // Meanwhile the relay found the stopped agent silent: reads and writes
    // go to the other replica, promptly.
    for method in ["GET", "POST"] {
        let t = Instant::now();
        let a = client
            .call(method, &url, Some(&client_token), body(method))
            .await;
        assert_eq!(a.status, 200, "{method}: {}", a.text());
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{method}: {:?}",
            t.elapsed()
        );
    }
    assert_eq!(slow_up.hits.load(Ordering::Relaxed), 0);
    // The agent comes back: the write is answered, having run once, there.
    slow.proc.signal("CONT");
    let a = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write is answered")
        .expect("task");
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("write"), "{}", a.text());
    assert_eq!(
        slow_up.hits.load(Ordering::Relaxed),
        1,
        "the write ran once"
    );
    // Its tunnel stayed: it takes requests again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow_up.hits.load(Ordering::Relaxed) < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow agent got no request again"
        );
        let a = client.call("GET", &url, Some(&client_token), "").await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    assert!(
        !relay.proc.stderr_text().contains("closing its tunnel"),
        "the living agent's tunnel was closed"
    );
}
