//! deploy/Dockerfile: it parses, and it builds the relay with the very
//! command deploy/README.md gives. With a working container engine the image
//! is built too; without one the test says so.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Dockerfile's instructions (continuation lines joined, comments and
/// parser directives dropped), each as (keyword, arguments).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        // Comment lines inside a continued instruction are skipped too.
        if trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_owned(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

#[test]
fn the_dockerfile_parses_and_builds_what_the_readme_says() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    let steps = instructions(&text);
    for (keyword, _) in &steps {
        assert!(
            KEYWORDS.contains(&keyword.as_str()),
            "unknown Dockerfile instruction {keyword:?}"
        );
    }
    let first = steps
        .iter()
        .find(|(k, _)| k != "ARG")
        .expect("an instruction");
    assert_eq!(
        first.0, "FROM",
        "the first instruction after ARGs is not FROM"
    );
    assert!(
        steps.iter().filter(|(k, _)| k == "FROM").count() >= 2,
        "not a multi-stage build"
    );
    assert!(
        steps
            .iter()
            .any(|(k, a)| k == "USER" && !a.starts_with("root")),
        "the image runs as root"
    );

    // The build command(s): each `cargo build …` of a RUN, up to `&&`.
    let builds: Vec<String> = steps
        .iter()
        .filter(|(k, _)| k == "RUN")
        .flat_map(|(_, a)| {
            a.split("&&")
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|c| c.find("cargo build").map(|i| c[i..].trim().to_owned()))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "expected one cargo build in the Dockerfile: {builds:?}"
    );
    let readme =
        std::fs::read_to_string(repo().join("deploy/README.md")).expect("deploy/README.md");
    assert!(
        readme.contains(&builds[0]),
        "deploy/README.md does not give the Dockerfile's build command `{}`",
        builds[0]
    );

    build_the_image_if_an_engine_runs();
}

fn build_the_image_if_an_engine_runs() {
    let info = std::process::Command::new("docker").arg("info").output();
    match info {
        Err(e) => {
            eprintln!("skipped building the image: cannot run `docker` ({e})");
        }
        Ok(out) if !out.status.success() => {
            let why = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "skipped building the image: `docker info` failed: {}",
                why.lines().last().unwrap_or("").trim()
            );
        }
        Ok(_) => {
            let status = std::process::Command::new("docker")
                .args([
                    "build",
                    "-f",
                    "deploy/Dockerfile",
                    "-t",
                    "drawbridge-relay:test",
                    ".",
                ])
                .current_dir(repo())
                .status()
                .expect("run docker build");
            assert!(status.success(), "docker build failed");
        }
    }
}
