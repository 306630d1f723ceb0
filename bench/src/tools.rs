//! The comparison tunnels: rathole and bore from crates.io, at pinned
//! versions, installed into `bench/.tools`; OpenSSH's server from Debian.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// rathole from crates.io. Built without its TLS and WebSocket transports
/// (they need OpenSSL); the plain TCP and Noise transports are measured.
/// Installed without `--locked`: its lock file pins `time` 0.3.29, which
/// today's compilers reject (E0282), so its dependencies resolve anew
/// within their semver ranges.
pub const RATHOLE: &str = "0.5.0";
/// bore-cli from crates.io.
pub const BORE: &str = "0.6.0";

/// Where the tunnels are installed: `bench/.tools` (ignored by git).
pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools")
}

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Paths of every external program the run uses.
pub struct Tools {
    pub rathole: PathBuf,
    pub bore: PathBuf,
    pub sshd: PathBuf,
    pub ssh: PathBuf,
    pub ssh_keygen: PathBuf,
}

/// Installs what the systems to measure need (`wanted`; empty: every
/// system) and is missing; returns where everything is. A tunnel no system
/// needs is not installed (its path is where it would be).
pub fn ensure(wanted: &[String]) -> anyhow::Result<Tools> {
    let needs = |prefix: &str| wanted.is_empty() || wanted.iter().any(|s| s.starts_with(prefix));
    let dir = tools_dir();
    let rathole = if needs("rathole") {
        install(
            &dir,
            "rathole",
            RATHOLE,
            &["--no-default-features", "--features", "server,client,noise"],
            "rathole",
            false,
        )?
    } else {
        dir.join("bin").join("rathole")
    };
    let bore = if needs("bore") {
        install(&dir, "bore-cli", BORE, &[], "bore", true)?
    } else {
        dir.join("bin").join("bore")
    };
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if needs("ssh-r") && !sshd.exists() {
        apt_install("openssh-server")?;
        if !sshd.exists() {
            bail!(
                "{} is still missing after installing openssh-server",
                sshd.display()
            );
        }
    }
    Ok(Tools {
        rathole,
        bore,
        sshd,
        ssh: PathBuf::from("/usr/bin/ssh"),
        ssh_keygen: PathBuf::from("/usr/bin/ssh-keygen"),
    })
}

/// `cargo install --root DIR --version V [--locked] CRATE`, unless the
/// binary is there already (`DIR/.crates.toml` records the version installed).
fn install(
    dir: &Path,
    krate: &str,
    version: &str,
    extra: &[&str],
    bin: &str,
    locked: bool,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("bin").join(bin);
    let recorded = std::fs::read_to_string(dir.join(".crates.toml")).unwrap_or_default();
    if path.exists() && recorded.contains(&format!("\"{krate} {version} ")) {
        return Ok(path);
    }
    eprintln!("== installing {krate} {version} into {}", dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["install", "--root"])
        .arg(dir)
        .args(["--version", version, krate])
        .args(extra);
    if locked {
        cmd.arg("--locked");
    }
    let status = cmd
        // Its own target dir: the workspace's is locked by `cargo run`.
        .env("CARGO_TARGET_DIR", dir.join("build"))
        .status()
        .with_context(|| format!("run cargo install {krate}"))?;
    if !status.success() || !path.exists() {
        bail!("cargo install {krate} {version} failed");
    }
    Ok(path)
}

/// Installs a Debian package (with sudo when not root).
fn apt_install(package: &str) -> anyhow::Result<()> {
    eprintln!("== installing {package} with apt-get");
    let root = crate::procs::run("id", &["-u"])?.trim() == "0";
    let mut steps: Vec<Vec<&str>> = vec![
        vec!["apt-get", "update", "-qq"],
        vec!["apt-get", "install", "-y", "-qq", package],
    ];
    if !root {
        for s in &mut steps {
            s.insert(0, "sudo");
        }
    }
    for s in steps {
        let status = std::process::Command::new(s[0])
            .args(&s[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("run {}", s.join(" ")))?;
        if !status.success() {
            bail!("{} failed", s.join(" "));
        }
    }
    Ok(())
}

/// A program's version line (first line of `program args`), for the report.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}
