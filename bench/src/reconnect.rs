//! Reconnect: the relay is stopped (SIGTERM, so agents get `GoAway`) and
//! started again on the same port and state; the time from the signal until
//! the route answers a `tools/call` again.

use std::time::{Duration, Instant};

use crate::record::{median, Record};
use crate::systems::{self, Relay, SQL_ROUTE};

pub async fn run(
    dir: &std::path::Path,
    db: &std::path::Path,
    runs: usize,
) -> anyhow::Result<Record> {
    let mut relay = Relay::start(&dir.join("relay"), "127.0.0.1:0", &[]).await?;
    let agent_token = relay.token(false)?;
    let client_token = relay.token(true)?;
    let _agent = systems::agent(
        &relay,
        &agent_token,
        SQL_ROUTE,
        &["--sqlite".into(), db.display().to_string()],
        "quic",
        dir,
    )
    .await?;
    let target = relay.target(&client_token)?;
    systems::wait_serving(&target, Duration::from_secs(30)).await?;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        relay.proc.terminate()?;
        relay.proc.wait_exit(Duration::from_secs(30)).await?;
        let (state, extra, addr) = (relay.state.clone(), relay.extra.clone(), relay.addr);
        drop(relay);
        relay = Relay::start(&state, &addr.to_string(), &extra).await?;
        systems::wait_serving(&target, Duration::from_secs(60)).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "  restart {}/{runs}: route serves again after {ms:.0} ms",
            i + 1
        );
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let mut r = Record::new("drawbridge-quic", "reconnect");
    r.p50_us = Some(median(&times));
    r.p99_us = times.iter().copied().reduce(f64::max);
    r.runs = Some(runs as u64);
    Ok(r)
}
