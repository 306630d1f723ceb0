//! Child processes: the relay, agents and the other tunnels. Their stderr
//! goes to a log file in the run's directory (not the terminal: printing
//! thousands of lines would slow everything down), and their stdout to a
//! file of its own, read for the announcements we wait for: not through a
//! pipe, whose reader would be a task of the bench's own runtime, waking for
//! every request line an agent prints and taking CPU from the load client
//! in the middle of a measurement. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

/// A running child process.
pub struct Proc {
    pub name: String,
    child: Child,
    pub pid: u32,
    /// Where its stdout goes, and how much of it was read already.
    out: PathBuf,
    out_read: usize,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args` and extra environment `envs`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let out = log_dir.join(format!("{name}.out"));
        let out_file =
            std::fs::File::create(&out).with_context(|| format!("create {}", out.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err))
            .env_remove("RUST_LOG")
            .env_remove("DRAWBRIDGE_TOKEN")
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        let pid = child.id().context("child pid")?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            pid,
            out,
            out_read: 0,
            log,
        })
    }

    /// Waits for the next stdout line containing `needle`; returns it.
    pub async fn wait_stdout(&mut self, needle: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = std::fs::read(&self.out).unwrap_or_default();
            // Whole lines only: a line being written is read next time.
            let end = text
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
                .max(self.out_read);
            let fresh = String::from_utf8_lossy(&text[self.out_read..end]).into_owned();
            for line in fresh.lines() {
                self.out_read += line.len() + 1;
                if line.contains(needle) {
                    return Ok(line.to_owned());
                }
            }
            self.out_read = end;
            if self.child.try_wait()?.is_some() {
                bail!(
                    "{} exited before printing {needle:?}; see {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} did not print {needle:?} within {within:?}; see {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        Ok(())
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {within:?}", self.name))??;
        Ok(())
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Resident memory of a process, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
/// released), for tools that cannot be told to pick their own.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Runs a command to completion; returns its stdout, or fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
