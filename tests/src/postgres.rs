//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, `postgres` on 127.0.0.1 and a free port, `fsync=off`, trust
//! authentication. Run as root (as the tests are here and in CI), the server
//! runs as the unprivileged `postgres` user (PostgreSQL refuses root), which
//! owns the directory.
//!
//! The server runs under a small `sh` wrapper whose stdin is a pipe from this
//! process: when the [`TestServer`] is dropped, or this process ends in any
//! way (a static is never dropped; a test may panic or be killed), the pipe
//! closes and the wrapper stops the server and removes the directory.
//!
//! One server per test binary process ([`shared`]), one database per case
//! ([`TestServer::create_database`]), so cases run in parallel. (nextest runs
//! each test in a process of its own: there, one server per case.) A test
//! that restarts the server ([`TestServer::restart`]) starts its own
//! ([`TestServer::start`]).
//!
//! Shared by the end-to-end tests (this crate) and the store's PostgreSQL
//! conformance tests, which include this file (`#[path]` in
//! store/tests/support/mod.rs) rather than depend on this crate: it uses
//! only std, tokio and tokio-postgres.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where to look for `initdb` and `postgres` besides `$DRAWBRIDGE_PG_BIN`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; dropping it stops it and removes its directory.
pub struct TestServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    wrapper: Child,
    /// Closing it tells the wrapper to stop the server.
    stdin: Option<ChildStdin>,
}

/// The server of this test process, started by the first caller.
pub fn shared() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::start().unwrap_or_else(|e| panic!("{e}")))
}

impl TestServer {
    /// Starts a server; an error that says what is missing or what the
    /// server said.
    pub fn start() -> Result<TestServer, String> {
        let bin = bin_dir()?;
        let mut last = String::new();
        // The port is found free, then given to the server: another process
        // may take it in between, so try again a few times.
        for _ in 0..3 {
            match TestServer::start_in(&bin) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_in(bin: &Path) -> Result<TestServer, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("dbr-pg-{}", unique()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let user = unprivileged_user()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {} to postgres: {e}", dir.display()))?;
        }
        let script = r#"
            set -u
            dir=$1 port=$2
            if ! initdb -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C --no-sync \
                   >"$dir/initdb.log" 2>&1; then
                cat "$dir/initdb.log" >&2
                rm -rf "$dir"
                exit 1
            fi
            postgres -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
                -c max_connections=300 -c shared_buffers=16MB \
                >"$dir/server.log" 2>&1 &
            pid=$!
            read -r _ || true
            # pg_ctl: the server may have been restarted (another pid).
            pg_ctl -D "$dir/data" -m fast -w -t 20 stop >/dev/null 2>&1 || kill -INT "$pid" 2>/dev/null
            wait "$pid"
            rm -rf "$dir"
        "#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("pg-test-server")
            .arg(&dir)
            .arg(port.to_string())
            .current_dir(&dir)
            .env("PATH", path_with(bin))
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid).env("HOME", &dir);
        }
        let mut wrapper = cmd
            .spawn()
            .map_err(|e| format!("cannot start sh for the PostgreSQL test server: {e}"))?;
        let stdin = wrapper.stdin.take();
        let mut server = TestServer {
            port,
            dir,
            bin: bin.to_path_buf(),
            user,
            wrapper,
            stdin,
        };
        server.wait_ready(bin)?;
        Ok(server)
    }

    /// Waits until the server accepts connections; its log if it ended.
    fn wait_ready(&mut self, bin: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map_err(|e| format!("cannot run pg_isready: {e}"))?;
            if ready.success() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.wrapper.try_wait() {
                // initdb failed: the wrapper printed its log and left.
                let mut said = String::new();
                if let Some(mut e) = self.wrapper.stderr.take() {
                    let _ = e.read_to_string(&mut said);
                }
                return Err(format!("initdb failed in {}: {said}", self.dir.display()));
            }
            if Instant::now() > deadline || self.server_gone() {
                return Err(format!(
                    "the PostgreSQL test server did not start on 127.0.0.1:{}: {}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server gave up starting (e.g. its port was taken). Not
    /// any FATAL: pg_isready's early tries log "the database system is
    /// starting up".
    fn server_gone(&self) -> bool {
        std::fs::read_to_string(self.dir.join("server.log")).is_ok_and(|l| {
            l.contains("database system is shut down")
                || l.contains("could not create any TCP/IP sockets")
        })
    }

    /// The server's logs (initdb's, the server's).
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["initdb.log", "server.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                out.push_str(&format!("\n--- {name}\n{text}"));
            }
        }
        if out.is_empty() {
            "no log (the directory is gone: initdb failed?)".into()
        } else {
            out
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_ctl restart -m fast`: every connection is closed, the server
    /// is down for a moment, then accepts connections again on the same
    /// port. Returns once it does.
    pub fn restart(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "restart", "-l"])
            .arg(self.dir.join("server.log"))
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid).env("HOME", &self.dir);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl restart failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ));
        }
        // -w: pg_ctl returned once the server accepts connections.
        Ok(())
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database with a random name; returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", unique());
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(client);
        let _ = driver.await;
        self.url(&name)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // EOF on the wrapper's stdin: it stops the server, removes the directory.
        drop(self.stdin.take());
        if let Some(mut e) = self.wrapper.stderr.take() {
            let _ = e.read_to_string(&mut String::new());
        }
        let _ = self.wrapper.wait();
    }
}

/// The directory of `initdb`, `postgres` and `pg_isready`:
/// `$DRAWBRIDGE_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin`, else
/// where `initdb` is on `PATH`. An error: they are not installed (the
/// bench skips its cluster scenario then).
pub fn bin_dir() -> Result<PathBuf, String> {
    let has = |d: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("DRAWBRIDGE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "DRAWBRIDGE_PG_BIN={} has no initdb, postgres and pg_isready",
                dir.display()
            ))
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for d in on_path {
        if let Ok(real) = std::fs::canonicalize(d.join("initdb")) {
            if let Some(dir) = real.parent().filter(|d| has(d)) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    Err(format!(
        "PostgreSQL is not installed: no initdb, postgres and pg_isready in {DEBIAN_ROOT}/*/bin \
         or on PATH (Debian: apt-get install postgresql; scripts/test.sh installs it; or set \
         DRAWBRIDGE_PG_BIN to the directory that has them)"
    ))
}

fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut dirs = vec![bin.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| bin.as_os_str().to_owned())
}

/// As root: the uid and gid of the `postgres` user (PostgreSQL will not run
/// as root). Otherwise none: the server runs as this user.
fn unprivileged_user() -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell who runs the tests (/proc/self): {e}"))?;
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres"))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            "the tests run as root and there is no `postgres` user to run PostgreSQL as \
             (PostgreSQL refuses root; the Debian package postgresql creates the user)"
                .to_owned()
        })
}

/// A name no other server or database of any test process has.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
