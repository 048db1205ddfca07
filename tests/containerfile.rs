//! The shipped `Containerfile` checked without a container engine: every
//! binary it builds or copies is a `[[bin]]` of Cargo.toml, and every flag of
//! its ENTRYPOINT, CMD and HEALTHCHECK is in that binary's `--help` (the
//! binaries built for this test run).

mod util;

use std::collections::BTreeSet;
use util::help::{assert_flags_known, cargo_bins, flags_in, read_repo_file};

const FILE: &str = "Containerfile";

/// The binary built for this test run that stands for `name`.
fn built(name: &str) -> &'static str {
    match name {
        "server" => env!("CARGO_BIN_EXE_server"),
        "client" => env!("CARGO_BIN_EXE_client"),
        "loadgen" => env!("CARGO_BIN_EXE_loadgen"),
        other => panic!("{FILE} runs {other}, which this test does not know"),
    }
}

/// Instructions (continuation lines joined, comments dropped) as (KEYWORD, rest).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let (part, continued) = match line.trim_end().strip_suffix('\\') {
            Some(p) => (p, true),
            None => (line.trim_end(), false),
        };
        current.push_str(part);
        current.push(' ');
        if !continued && !current.trim().is_empty() {
            let (k, rest) = current
                .trim()
                .split_once(' ')
                .unwrap_or((current.trim(), ""));
            out.push((k.to_uppercase(), rest.trim().to_string()));
            current.clear();
        }
    }
    out
}

/// An exec-form (JSON array) argument list.
fn exec_form(what: &str, value: &str) -> Vec<String> {
    serde_json::from_str(value)
        .unwrap_or_else(|e| panic!("{FILE}: {what} is not an exec-form JSON array ({e}): {value}"))
}

/// The name of the binary a path like /usr/local/bin/server points at.
fn bin_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap()
}

#[test]
fn containerfile_builds_and_runs_only_real_binaries_and_flags() {
    let text = read_repo_file(FILE);
    let ins = instructions(&text);
    let bins = cargo_bins();
    let of = |key: &str| -> Vec<&str> {
        ins.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };

    // Built: every `--bin NAME` of the cargo build.
    let mut built_bins = BTreeSet::new();
    for run in of("RUN").into_iter().filter(|r| r.contains("cargo build")) {
        assert!(
            run.contains("--locked"),
            "{FILE}: cargo build without --locked: {run}"
        );
        let words: Vec<&str> = run.split_whitespace().collect();
        for w in words.windows(2).filter(|w| w[0] == "--bin") {
            built_bins.insert(w[1].to_string());
        }
    }
    assert!(
        built_bins.contains("server"),
        "{FILE} builds no server: {built_bins:?}"
    );
    // Copied out of the build stage: target/release/NAME.
    let mut copied = BTreeSet::new();
    for copy in of("COPY").into_iter().filter(|c| c.starts_with("--from=")) {
        let src = copy.split_whitespace().nth(1).unwrap();
        copied.insert(bin_name(src).to_string());
    }
    for b in built_bins.iter().chain(&copied) {
        assert!(
            bins.contains(b),
            "{FILE} builds or copies {b}, not a [[bin]] of Cargo.toml ({bins:?})"
        );
    }
    assert!(
        copied.is_subset(&built_bins),
        "{FILE} copies {copied:?} but builds only {built_bins:?}"
    );

    // ENTRYPOINT + CMD: the server and its default flags.
    let entry = exec_form("ENTRYPOINT", of("ENTRYPOINT").last().expect("ENTRYPOINT"));
    assert_eq!(
        bin_name(&entry[0]),
        "server",
        "{FILE}: ENTRYPOINT {entry:?}"
    );
    assert!(copied.contains("server"));
    let cmd = exec_form("CMD", of("CMD").last().expect("CMD"));
    let cmd_flags = flags_in(&cmd.join(" "));
    assert!(
        cmd_flags.contains("--port"),
        "{FILE}: CMD names no --port: {cmd:?}"
    );
    assert_flags_known(built("server"), &cmd_flags, "Containerfile ENTRYPOINT/CMD");
    let port = cmd
        .iter()
        .skip_while(|a| *a != "--port")
        .nth(1)
        .expect("--port value");
    assert_eq!(
        of("EXPOSE"),
        [format!("{port}/udp")],
        "{FILE}: EXPOSE is not CMD's --port"
    );

    // HEALTHCHECK: a copied binary probing CMD's port, with its own flags.
    let health = of("HEALTHCHECK");
    assert_eq!(health.len(), 1, "{FILE}: one HEALTHCHECK");
    let probe = health[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK ... CMD [..]")
        .1;
    let probe = exec_form("HEALTHCHECK CMD", probe);
    let tool = bin_name(&probe[0]);
    assert!(
        copied.contains(tool),
        "{FILE}: HEALTHCHECK runs {tool}, which the image lacks"
    );
    assert_flags_known(
        built(tool),
        &flags_in(&probe[1..].join(" ")),
        "Containerfile HEALTHCHECK",
    );
    assert!(
        probe.contains(port),
        "{FILE}: HEALTHCHECK does not probe port {port}: {probe:?}"
    );

    // Non-root at run time.
    let user = of("USER");
    let uid = user.last().expect("USER").split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "{FILE}: USER {user:?} is not a numeric non-root uid"
    );
}

#[test]
fn ignore_files_leave_the_target_directory_out() {
    let podman = read_repo_file(".containerignore");
    assert!(
        podman
            .lines()
            .any(|l| l.trim() == "/target" || l.trim() == "target"),
        ".containerignore does not exclude target/"
    );
    // docker reads .dockerignore only: the same list.
    assert_eq!(
        read_repo_file(".dockerignore"),
        podman,
        ".dockerignore differs from .containerignore"
    );
}
