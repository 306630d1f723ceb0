//! The real binaries as child processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::TempDir;

/// Path of a workspace binary (built by `cargo build --workspace --bins --tests` before the tests).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target.join(profile).join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins --tests` before the tests (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A child process whose output lines are collected; killed on drop (with
/// its whole process group when started by [`Proc::spawn_group`]).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub pid: u32,
    /// Leads its own process group, all of which is killed on drop.
    group: bool,
    stdout_rx: mpsc::UnboundedReceiver<String>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(&str, &str)]) -> Proc {
        Self::spawn_as(name, program, args, envs, false)
    }

    /// Like [`Proc::spawn`], in a process group of its own that is killed
    /// whole on drop: for a program that starts children of its own which
    /// outlive it (chromedriver's Chromium does).
    pub fn spawn_group(name: &str, program: &Path, args: &[String], envs: &[(&str, &str)]) -> Proc {
        Self::spawn_as(name, program, args, envs, true)
    }

    fn spawn_as(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        group: bool,
    ) -> Proc {
        let mut cmd = Command::new(program);
        if group {
            cmd.process_group(0);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info,relay=debug,agent=debug,tunnel=debug")
            .env_remove("DRAWBRIDGE_TOKEN")
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id().expect("pid");
        let (tx, rx) = mpsc::unbounded_channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            let tag = name.to_owned();
            readers.push(tokio::spawn(async move {
                let mut r = BufReader::new(out).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    eprintln!("[{tag} stdout] {l}");
                    lines.lock().expect("lock").push(l.clone());
                    let _ = tx.send(l);
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let lines = stderr.clone();
            let tag = name.to_owned();
            readers.push(tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    eprintln!("[{tag}] {l}");
                    lines.lock().expect("lock").push(l);
                }
            }));
        }
        Proc {
            name: name.to_owned(),
            child: Some(child),
            pid,
            group,
            stdout_rx: rx,
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits for the next stdout line containing `needle`; `None` when the
    /// process exits or `within` passes first.
    pub async fn try_wait_stdout(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout_rx.recv()).await {
                Ok(Some(l)) if l.contains(needle) => return Some(l),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits for the next stdout line containing `needle`.
    pub async fn wait_stdout(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout_rx.recv()).await {
                Ok(Some(l)) if l.contains(needle) => return l,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{} exited before printing {needle:?}; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                ),
                Err(_) => panic!(
                    "{} did not print {needle:?} within {within:?}; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                ),
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Waits (up to `within`) until stderr has a line containing `needle`.
    pub async fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self
                .stderr
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid);
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("child");
        let status = tokio::time::timeout(within, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {within:?}", self.name))
            .expect("wait");
        // Let the readers collect the last lines the process wrote.
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        status.code()
    }

    /// SIGKILL now and reap.
    pub async fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A running `relay serve` with its own state dir.
pub struct RelayProc {
    pub proc: Proc,
    pub addr: std::net::SocketAddr,
    /// The admin listener (metrics, health), unless `--admin-listen off`.
    pub admin: Option<std::net::SocketAddr>,
    pub state: Arc<TempDir>,
    pub extra_args: Vec<String>,
    /// The CA certificate clients and agents trust for this relay.
    pub ca: PathBuf,
}

impl RelayProc {
    /// Starts a relay on 127.0.0.1:0 with a self-signed certificate.
    pub async fn start(extra: &[&str]) -> RelayProc {
        let state = Arc::new(TempDir::new("relay"));
        Self::start_with(state, "127.0.0.1:0", extra).await
    }

    /// Starts a relay on `listen` with an existing state dir. Its
    /// certificate is self-signed unless `extra` gives `--tls-cert`; its
    /// admin listener is on a free loopback port unless `extra` gives
    /// `--admin-listen`.
    pub async fn start_with(state: Arc<TempDir>, listen: &str, extra: &[&str]) -> RelayProc {
        let ca = state.path().join("ca.pem");
        let tls: &[&str] = if extra.contains(&"--tls-cert") {
            &[]
        } else {
            &["--self-signed"]
        };
        Self::start_tls(state, listen, tls, ca, extra).await
    }

    /// Starts a relay whose certificate comes from `tls` (e.g. the ACME
    /// flags); clients and agents trust `ca`.
    pub async fn start_tls(
        state: Arc<TempDir>,
        listen: &str,
        tls: &[&str],
        ca: PathBuf,
        extra: &[&str],
    ) -> RelayProc {
        let mut args: Vec<String> = vec!["serve".into(), "--listen".into(), listen.into()];
        args.extend(tls.iter().map(|s| s.to_string()));
        if !extra.contains(&"--admin-listen") {
            args.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        args.extend([
            "--state-dir".into(),
            state.path().display().to_string(),
            // Short enough that tests see dead peers quickly, long enough
            // that a loaded CI machine does not drop live ones.
            "--keepalive-interval".into(),
            "2s".into(),
        ]);
        let extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra_args.iter().any(|a| a == "--drain-timeout") {
            args.extend(["--drain-timeout".into(), "2s".into()]);
        }
        args.extend(extra_args.iter().cloned());
        Self::spawn(state, args, extra_args, &[], ca).await
    }

    /// Starts `relay serve --config <config> <extra…>` with environment
    /// `envs`: the file names the listen address (port 0), the state dir
    /// (`state`) and the certificate (self-signed, for [`RelayProc::ca`]).
    pub async fn start_with_config(
        state: Arc<TempDir>,
        config: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> RelayProc {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--admin-listen") {
            args.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
        }
        // `restart` runs `start_with` with these: the same file, under
        // start_with's flags (same address and state dir).
        let extra_args = args[1..].to_vec();
        let ca = state.path().join("ca.pem");
        Self::spawn(state, args, extra_args, envs, ca).await
    }

    async fn spawn(
        state: Arc<TempDir>,
        args: Vec<String>,
        extra_args: Vec<String>,
        envs: &[(&str, &str)],
        ca: PathBuf,
    ) -> RelayProc {
        let mut proc = Proc::spawn("relay", &bin("relay"), &args, envs);
        let line = proc
            .wait_stdout("listening on", Duration::from_secs(20))
            .await;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<std::net::SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Printed before the "listening" line.
        let admin = proc
            .stdout
            .lock()
            .expect("lock")
            .iter()
            .find_map(|l| l.strip_prefix("admin listener (metrics, health) on http://"))
            .map(|a| a.parse().expect("admin address"));
        RelayProc {
            proc,
            addr,
            admin,
            state,
            extra_args,
            ca,
        }
    }

    /// Stops this relay (SIGTERM, graceful) and starts a new one on the same port and state.
    pub async fn restart(self) -> RelayProc {
        let RelayProc {
            mut proc,
            addr,
            state,
            extra_args,
            ..
        } = self;
        proc.signal("TERM");
        proc.wait_exit(Duration::from_secs(20)).await;
        drop(proc);
        let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
        RelayProc::start_with(state, &addr.to_string(), &extra).await
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn route_url(&self, route: &str) -> String {
        format!("https://{}/mcp/{route}", self.addr)
    }

    /// `GET path` on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.admin.expect("the relay has an admin listener");
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the admin listener");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        (status, body.to_owned())
    }

    /// The value of one series of `/metrics`, e.g.
    /// `drawbridge_agents_connected{transport="quic"}` (`None`: absent).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.ca.clone()
    }

    /// Runs a `relay` admin command against this relay's state (its state
    /// dir, and its `--database-url` if it has one); returns (code, stdout,
    /// stderr).
    pub fn admin(&self, args: &[&str]) -> (i32, String, String) {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.push("--state-dir".into());
        full.push(self.state.path().display().to_string());
        // A node of a cluster: its database, as it was started with.
        if let Some(at) = self.extra_args.iter().position(|a| a == "--database-url") {
            full.extend(self.extra_args[at..].iter().take(2).cloned());
        }
        let out = std::process::Command::new(bin("relay"))
            .args(&full)
            .output()
            .expect("run relay admin command");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Creates a token and returns it.
    pub fn token(&self, owner: &str, client: bool) -> String {
        let mut args = vec!["token", "create", "--owner", owner];
        if client {
            args.push("--client");
        }
        let (code, out, err) = self.admin(&args);
        assert_eq!(code, 0, "token create failed: {err}");
        out.trim().to_owned()
    }

    /// The id of the newest token (from `relay token list --json`).
    pub fn last_token_id(&self) -> String {
        let (_, out, _) = self.admin(&["token", "list", "--json"]);
        let last = out.lines().last().expect("a token");
        let v: serde_json::Value = serde_json::from_str(last).expect("json");
        v["id"].as_str().expect("id").to_owned()
    }
}

/// A running `agent connect`.
pub struct AgentProc {
    pub proc: Proc,
    /// The public URL it announced.
    pub url: String,
}

impl AgentProc {
    /// Starts an agent for `route` served from `upstream`, and waits until it is live.
    pub async fn start(
        relay: &RelayProc,
        token: &str,
        route: &str,
        upstream: &str,
        transport: &str,
    ) -> AgentProc {
        let mut a = Self::spawn(relay, token, route, upstream, transport, &[]);
        let url = a.wait_live().await;
        AgentProc { proc: a.proc, url }
    }

    /// Starts an agent without waiting for it to come up.
    pub fn spawn(
        relay: &RelayProc,
        token: &str,
        route: &str,
        upstream: &str,
        transport: &str,
        extra: &[&str],
    ) -> AgentProc {
        Self::spawn_upstream(
            relay,
            token,
            route,
            &["--http", upstream, "--plain-http"],
            transport,
            extra,
        )
    }

    /// Starts an agent whose upstream is given as arguments (e.g.
    /// `["--sqlite", path]`), and waits until it is live.
    pub async fn start_upstream(
        relay: &RelayProc,
        token: &str,
        route: &str,
        upstream: &[&str],
        transport: &str,
    ) -> AgentProc {
        let mut a = Self::spawn_upstream(relay, token, route, upstream, transport, &[]);
        let url = a.wait_live().await;
        AgentProc { proc: a.proc, url }
    }

    /// Starts an agent whose upstream is given as arguments, without waiting.
    pub fn spawn_upstream(
        relay: &RelayProc,
        token: &str,
        route: &str,
        upstream: &[&str],
        transport: &str,
        extra: &[&str],
    ) -> AgentProc {
        Self::spawn_at(
            &relay.url(),
            relay,
            token,
            route,
            upstream,
            transport,
            extra,
        )
    }

    /// Like [`AgentProc::spawn_upstream`], dialing `relay_url` (e.g. a
    /// [`crate::netsim::Network`] in front of the relay).
    pub fn spawn_at(
        relay_url: &str,
        relay: &RelayProc,
        token: &str,
        route: &str,
        upstream: &[&str],
        transport: &str,
        extra: &[&str],
    ) -> AgentProc {
        let mut args: Vec<String> = vec![
            "connect".into(),
            "--relay".into(),
            relay_url.into(),
            "--ca-cert".into(),
            relay.ca().display().to_string(),
            "--route".into(),
            route.into(),
            "--transport".into(),
            transport.into(),
        ];
        args.extend(upstream.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn(
            "agent",
            &bin("agent"),
            &args,
            &[("DRAWBRIDGE_TOKEN", token)],
        );
        AgentProc {
            proc,
            url: String::new(),
        }
    }

    /// Waits for the next "is live at" announcement; returns the URL.
    pub async fn wait_live(&mut self) -> String {
        let line = self
            .proc
            .wait_stdout("is live at", Duration::from_secs(30))
            .await;
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .expect("url in live line")
            .to_owned();
        self.url = url.clone();
        url
    }

    /// The transport of the last announcement ("quic" or "tcp").
    pub fn last_transport(&self) -> String {
        let lines = self.proc.stdout.lock().expect("lock");
        let last = lines
            .iter()
            .rev()
            .find(|l| l.contains("is live at"))
            .cloned()
            .unwrap_or_default();
        last.rsplit("(via ")
            .next()
            .map(|s| s.trim_end_matches(')').to_owned())
            .unwrap_or_default()
    }
}
