//! Starting each system under test in front of the local server, and the
//! [`Target`] that reaches it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustls_pki_types::ServerName;

use crate::client::{self, Conn, Target};
use crate::procs::{self, Proc};
use crate::tools::Tools;

/// The route the built-in SQLite server is served on.
pub const SQL_ROUTE: &str = "sql";
/// The route that forwards to the local server's `/bytes/<n>`.
pub const BULK_ROUTE: &str = "bulk";
/// The owner of every token the bench creates.
pub const OWNER: &str = "bench@example.com";
/// The relay flag that turns per-message policy and audit off.
pub const NO_POLICY_FLAG: &str = "--bench-disable-policy-and-audit";
/// What `relay serve` prints before its admin listener's address.
const ADMIN_LINE: &str = "admin listener (metrics, health) on http://";

/// A started system: its processes (stopped on drop) and how to reach it.
pub struct Running {
    pub target: Target,
    /// A Drawbridge relay's log (its stderr) and state directory.
    pub relay_files: Option<RelayFiles>,
    /// Held only so that they stop when this is dropped.
    _procs: Vec<Proc>,
}

/// Where a started relay writes its log and its audit trail.
pub struct RelayFiles {
    /// Its stderr: the log, one line per request.
    pub log: PathBuf,
    pub state: PathBuf,
}

/// Everything a system needs to start.
pub struct Env<'a> {
    pub tools: &'a Tools,
    /// The local server.
    pub upstream: SocketAddr,
    /// The SQLite database the local server and the agents serve.
    pub db: &'a Path,
    /// A directory for this run's files and logs.
    pub dir: &'a Path,
}

/// Path of a workspace binary built by `cargo build` (release for a release bench).
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::tools::workspace_dir().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target.join(profile).join(name)
}

/// Starts `system` (one of [`crate::record::SYSTEMS`]).
pub async fn start(system: &str, env: &Env<'_>) -> anyhow::Result<Running> {
    let dir = env.dir.join(system);
    std::fs::create_dir_all(&dir)?;
    let plain = |addr: SocketAddr, prefix: &str| Target {
        addr,
        tls: None,
        mcp_path: format!("{prefix}/mcp"),
        bytes_prefix: prefix.to_owned(),
        token: None,
    };
    let running = match system {
        "direct" => Running {
            target: plain(env.upstream, ""),
            relay_files: None,
            _procs: Vec::new(),
        },
        "drawbridge-quic" => drawbridge(env, &dir, "quic", false).await?,
        "drawbridge-quic-nopolicy" => drawbridge(env, &dir, "quic", true).await?,
        "drawbridge-tcp" => drawbridge(env, &dir, "tcp", false).await?,
        "rathole-tcp" => rathole(env, &dir, false)?,
        "rathole-noise" => rathole(env, &dir, true)?,
        "bore" => bore(env, &dir).await?,
        "ssh-r" => ssh(env, &dir)?,
        other => bail!("unknown system {other:?}"),
    };
    wait_serving(&running.target, Duration::from_secs(30))
        .await
        .with_context(|| format!("{system} never served the local server"))?;
    Ok(running)
}

/// Polls with `tools/call` until one succeeds.
pub async fn wait_serving(target: &Target, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = async {
            let mut c = Conn::open(target).await?;
            c.tools_call().await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A relay started by the bench, with its state dir.
pub struct Relay {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// Its admin listener (metrics), when `extra` gave `--admin-listen`.
    pub admin: Option<SocketAddr>,
    pub state: PathBuf,
    pub extra: Vec<String>,
}

impl Relay {
    /// `relay serve` on `listen` (port 0: the OS picks) with self-signed TLS;
    /// no admin listener unless `extra` gives `--admin-listen`.
    pub async fn start(state: &Path, listen: &str, extra: &[String]) -> anyhow::Result<Relay> {
        std::fs::create_dir_all(state)?;
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            listen,
            "--self-signed",
            "--state-dir",
            &state.display().to_string(),
            "--drain-timeout",
            "2s",
            // Every load generator and every scale agent comes from
            // 127.0.0.1: no per-address bounds.
            "--max-connections-per-ip",
            "0",
            "--max-quic-handshakes-per-ip",
            "0",
            // The scale run's agents are one owner with a route each.
            "--max-routes-per-owner",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let admin_wanted = extra.iter().any(|a| a == "--admin-listen");
        if !admin_wanted {
            // No fixed admin port (a restarted relay would race its
            // predecessor for it); metrics are not measured here.
            args.extend(["--admin-listen".to_owned(), "off".to_owned()]);
        }
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn("relay", &workspace_bin("relay"), &args, &[], state)?;
        // Printed before the "listening" line.
        let admin = if admin_wanted {
            let line = proc
                .wait_stdout(ADMIN_LINE, Duration::from_secs(30))
                .await?;
            let addr = line
                .split_once(ADMIN_LINE)
                .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
                .with_context(|| format!("no admin address in {line:?}"))?;
            Some(addr)
        } else {
            None
        };
        let line = proc
            .wait_stdout("listening on", Duration::from_secs(30))
            .await?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<SocketAddr>().ok())
            .with_context(|| format!("no address in {line:?}"))?;
        Ok(Relay {
            proc,
            addr,
            admin,
            state: state.to_path_buf(),
            extra: extra.to_vec(),
        })
    }

    /// `relay token create` (an agent token, or a client token), in its
    /// database when it was started with `--database-url`.
    pub fn token(&self, client: bool) -> anyhow::Result<String> {
        let state = self.state.display().to_string();
        let mut args = vec!["token", "create", "--owner", OWNER, "--state-dir", &state];
        if client {
            args.push("--client");
        }
        if let Some(at) = self.extra.iter().position(|a| a == "--database-url") {
            args.extend(self.extra[at..].iter().take(2).map(String::as_str));
        }
        let bin = workspace_bin("relay");
        Ok(procs::run(&bin.display().to_string(), &args)?
            .trim()
            .to_owned())
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca(&self) -> PathBuf {
        self.state.join("ca.pem")
    }

    /// How a client reaches this relay's routes with `token`.
    pub fn target(&self, token: &str) -> anyhow::Result<Target> {
        Ok(Target {
            addr: self.addr,
            tls: Some((
                client::tls_connector(&self.ca())?,
                ServerName::try_from(self.addr.ip().to_string())?,
            )),
            mcp_path: format!("/mcp/{SQL_ROUTE}"),
            bytes_prefix: format!("/mcp/{BULK_ROUTE}"),
            token: Some(token.to_owned()),
        })
    }
}

/// `agent connect` for `route`, served by `upstream` (e.g. `--sqlite FILE`).
pub async fn agent(
    relay: &Relay,
    token: &str,
    route: &str,
    upstream: &[String],
    transport: &str,
    dir: &Path,
) -> anyhow::Result<Proc> {
    let mut args: Vec<String> = vec![
        "connect".into(),
        "--relay".into(),
        relay.url(),
        "--ca-cert".into(),
        relay.ca().display().to_string(),
        "--route".into(),
        route.into(),
        "--transport".into(),
        transport.into(),
    ];
    args.extend(upstream.iter().cloned());
    let mut p = Proc::spawn(
        &format!("agent-{route}"),
        &workspace_bin("agent"),
        &args,
        &[("DRAWBRIDGE_TOKEN", token)],
        dir,
    )?;
    let line = p.wait_stdout("is live at", Duration::from_secs(30)).await?;
    if !line.contains(&format!("(via {transport})")) {
        bail!("agent connected with the wrong transport: {line}");
    }
    Ok(p)
}

async fn drawbridge(
    env: &Env<'_>,
    dir: &Path,
    transport: &str,
    no_policy: bool,
) -> anyhow::Result<Running> {
    let extra = if no_policy {
        vec![NO_POLICY_FLAG.to_owned()]
    } else {
        Vec::new()
    };
    let relay = Relay::start(&dir.join("relay"), "127.0.0.1:0", &extra).await?;
    let agent_token = relay.token(false)?;
    let client_token = relay.token(true)?;
    let sql = agent(
        &relay,
        &agent_token,
        SQL_ROUTE,
        // One client token makes every call: its calls in flight go up to
        // the concurrency level (the agent's default allows 8).
        &[
            "--sqlite".into(),
            env.db.display().to_string(),
            "--sqlite-max-calls-per-identity".into(),
            "1024".into(),
        ],
        transport,
        dir,
    )
    .await?;
    let bulk = agent(
        &relay,
        &agent_token,
        BULK_ROUTE,
        // Not an MCP server: no --max-response cap on its 256 MiB answer.
        &[
            "--http".into(),
            format!("http://{}", env.upstream),
            "--plain-http".into(),
        ],
        transport,
        dir,
    )
    .await?;
    let target = relay.target(&client_token)?;
    Ok(Running {
        target,
        relay_files: Some(RelayFiles {
            log: relay.proc.log.clone(),
            state: relay.state.clone(),
        }),
        _procs: vec![relay.proc, sql, bulk],
    })
}

fn rathole(env: &Env<'_>, dir: &Path, noise: bool) -> anyhow::Result<Running> {
    let (control, public) = (procs::free_port()?, procs::free_port()?);
    let (server_transport, client_transport) = if noise {
        let keys = procs::run(&env.tools.rathole.display().to_string(), &["--genkey"])?;
        let mut lines = keys.lines().map(str::trim).filter(|l| !l.is_empty());
        let mut private = None;
        let mut public_key = None;
        while let Some(l) = lines.next() {
            if l.starts_with("Private Key") {
                private = lines.next().map(str::to_owned);
            } else if l.starts_with("Public Key") {
                public_key = lines.next().map(str::to_owned);
            }
        }
        let (Some(private), Some(public_key)) = (private, public_key) else {
            bail!("rathole --genkey printed no key pair: {keys}");
        };
        (
            format!("[server.transport]\ntype = \"noise\"\n[server.transport.noise]\nlocal_private_key = \"{private}\"\n"),
            format!("[client.transport]\ntype = \"noise\"\n[client.transport.noise]\nremote_public_key = \"{public_key}\"\n"),
        )
    } else {
        (
            "[server.transport]\ntype = \"tcp\"\n".to_owned(),
            "[client.transport]\ntype = \"tcp\"\n".to_owned(),
        )
    };
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n{server_transport}\
         [server.services.mcp]\ntoken = \"bench-secret\"\nbind_addr = \"127.0.0.1:{public}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n{client_transport}\
         [client.services.mcp]\ntoken = \"bench-secret\"\nlocal_addr = \"{}\"\n",
        env.upstream
    );
    let (sp, cp) = (dir.join("server.toml"), dir.join("client.toml"));
    std::fs::write(&sp, server)?;
    std::fs::write(&cp, client)?;
    let s = Proc::spawn(
        "rathole-server",
        &env.tools.rathole,
        &["--server".into(), sp.display().to_string()],
        &[("RUST_LOG", "warn")],
        dir,
    )?;
    let c = Proc::spawn(
        "rathole-client",
        &env.tools.rathole,
        &["--client".into(), cp.display().to_string()],
        &[("RUST_LOG", "warn")],
        dir,
    )?;
    Ok(Running {
        target: Target {
            addr: ([127, 0, 0, 1], public).into(),
            tls: None,
            mcp_path: "/mcp".into(),
            bytes_prefix: String::new(),
            token: None,
        },
        relay_files: None,
        _procs: vec![s, c],
    })
}

/// bore's server listens on its fixed control port, 7835.
async fn bore(env: &Env<'_>, dir: &Path) -> anyhow::Result<Running> {
    let bin = &env.tools.bore;
    let secret = "bench-secret";
    let s = Proc::spawn(
        "bore-server",
        bin,
        &[
            "server".into(),
            "--bind-addr".into(),
            "127.0.0.1".into(),
            "--secret".into(),
            secret.into(),
        ],
        &[("RUST_LOG", "warn")],
        dir,
    )?;
    // The client retries nothing: wait for the control port first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect("127.0.0.1:7835")
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("bore server did not listen on 127.0.0.1:7835");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = Proc::spawn(
        "bore-client",
        bin,
        &[
            "local".into(),
            env.upstream.port().to_string(),
            "--local-host".into(),
            "127.0.0.1".into(),
            "--to".into(),
            "127.0.0.1".into(),
            "--secret".into(),
            secret.into(),
        ],
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        dir,
    )?;
    let line = c
        .wait_stdout("listening at", Duration::from_secs(10))
        .await?;
    let port: u16 = line
        .rsplit(':')
        .next()
        .map(|p| p.trim_matches(|ch: char| !ch.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {line:?}"))?;
    Ok(Running {
        target: Target {
            addr: ([127, 0, 0, 1], port).into(),
            tls: None,
            mcp_path: "/mcp".into(),
            bytes_prefix: String::new(),
            token: None,
        },
        relay_files: None,
        _procs: vec![s, c],
    })
}

/// A throwaway sshd on loopback (its own host key, config and authorized
/// key, run as the current user) and `ssh -R` to it.
fn ssh(env: &Env<'_>, dir: &Path) -> anyhow::Result<Running> {
    let keygen = env.tools.ssh_keygen.display().to_string();
    let (host_key, user_key) = (dir.join("host_key"), dir.join("user_key"));
    for k in [&host_key, &user_key] {
        let _ = std::fs::remove_file(k);
        let _ = std::fs::remove_file(k.with_extension("pub"));
        procs::run(
            &keygen,
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &k.display().to_string(),
            ],
        )?;
    }
    let authorized = dir.join("authorized_keys");
    std::fs::copy(dir.join("user_key.pub"), &authorized)?;
    let user = procs::run("id", &["-un"])?.trim().to_owned();
    if procs::run("id", &["-u"])?.trim() == "0" {
        // sshd insists on its privilege separation directory when root.
        std::fs::create_dir_all("/run/sshd")?;
    }
    let (port, public) = (procs::free_port()?, procs::free_port()?);
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
             AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowTcpForwarding yes\nGatewayPorts no\n\
             LogLevel ERROR\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            authorized.display()
        ),
    )?;
    let sshd = Proc::spawn(
        "sshd",
        &env.tools.sshd,
        &[
            "-D".into(),
            "-e".into(),
            "-f".into(),
            config.display().to_string(),
        ],
        &[],
        dir,
    )?;
    // ssh retries nothing either; give sshd a moment to listen.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("sshd did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ssh = Proc::spawn(
        "ssh",
        &env.tools.ssh,
        &[
            "-F",
            "/dev/null",
            "-N",
            "-T",
            "-p",
            &port.to_string(),
            "-i",
            &user_key.display().to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "LogLevel=ERROR",
            "-R",
            &format!("127.0.0.1:{public}:{}", env.upstream),
            &format!("{user}@127.0.0.1"),
        ]
        .map(str::to_owned),
        &[],
        dir,
    )?;
    Ok(Running {
        target: Target {
            addr: ([127, 0, 0, 1], public).into(),
            tls: None,
            mcp_path: "/mcp".into(),
            bytes_prefix: String::new(),
            token: None,
        },
        relay_files: None,
        _procs: vec![sshd, ssh],
    })
}
