//! Runs what contrib/k8s runs, on loopback, with no cluster: each server
//! workload's own args (bind address and ports moved to loopback and
//! ephemeral ports) start a server that passes the manifest's own liveness
//! (HTTP GET) and readiness (exec) probes; the loadgen Job's shard command,
//! once per index, runs against a server and writes its files; the merge
//! Job's command merges them.

mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use util::k8s::{
    command_of, container_runs, help_of, in_help, invocations, manifests, of_kind, pending,
    strings, Doc, Invocation,
};
use util::{assert_loadgen_consistent, wait_bounded, ServerProc, GUARD, LOADGEN_GUARD};

/// The word after `flag` in `tokens`.
fn value_of(tokens: &[String], flag: &str) -> Option<String> {
    let i = tokens.iter().position(|t| t == flag)?;
    tokens.get(i + 1).cloned()
}

/// `tokens` with the word after each flag of `set` replaced (each flag must
/// be there).
fn with_values(tokens: &[String], set: &[(&str, &str)], at: &str) -> Vec<String> {
    let mut out = tokens.to_vec();
    for (flag, value) in set {
        let i = out.iter().position(|t| t == flag);
        let i = i.unwrap_or_else(|| panic!("{at}: no {flag} in {tokens:?}"));
        out[i + 1] = value.to_string();
    }
    out
}

/// The status line of `GET path`, as the kubelet's HTTP probe sends it.
fn http_status(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    got.lines().next().unwrap_or("").to_string()
}

/// The containerPort of the port named `name` (and its protocol).
fn container_port(c: &yaml_rust2::Yaml, name: &str, at: &str) -> (i64, String) {
    let ports = c["ports"]
        .as_vec()
        .unwrap_or_else(|| panic!("{at}: no ports"));
    let p = ports.iter().find(|p| p["name"].as_str() == Some(name));
    let p = p.unwrap_or_else(|| panic!("{at}: no port named {name}"));
    let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
    (p["containerPort"].as_i64().unwrap(), proto)
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn server_workloads_start_with_their_args_and_pass_their_own_probes() {
    let docs = manifests();
    let mut started = Vec::new();
    for d in docs
        .iter()
        .filter(|d| matches!(d.kind(), "Deployment" | "DaemonSet"))
    {
        for c in d.containers() {
            let (at, runs) = container_runs(d, c);
            let Some(server) = runs.iter().find(|r| r.bin == "server") else {
                continue;
            };
            // The ports the manifest declares are the ones the server binds.
            let port = value_of(&server.tokens, "--port").expect("--port");
            let metrics = value_of(&server.tokens, "--metrics-listen").expect("--metrics-listen");
            let (echo, proto) = container_port(c, "echo", &at);
            assert_eq!(
                (echo.to_string(), proto.as_str()),
                (port.clone(), "UDP"),
                "{at}: echo port"
            );
            let live = &c["livenessProbe"]["httpGet"];
            let live_port = live["port"].as_str().expect("liveness port by name");
            let (mport, _) = container_port(c, live_port, &at);
            assert!(
                metrics.ends_with(&format!(":{mport}")),
                "{at}: probe port {mport}, metrics {metrics}"
            );

            let args = with_values(
                &server.tokens,
                &[
                    ("--port", "0"),
                    ("--bind", "127.0.0.1"),
                    ("--metrics-listen", "127.0.0.1:0"),
                ],
                &at,
            );
            eprintln!("{at}: server {}", args.join(" "));
            let mut srv = ServerProc::start_exact(&refs(&args));
            let maddr = srv.metrics_addr();

            let path = live["path"].as_str().expect("liveness path");
            let status = http_status(maddr, path);
            assert!(
                status.contains(" 200 "),
                "{at}: liveness GET {path}: {status:?}"
            );

            let exec = strings(&c["readinessProbe"]["exec"]["command"], &at);
            let probe = invocations(&exec).into_iter().find(|r| r.bin == "client");
            let probe = probe.unwrap_or_else(|| panic!("{at}: readiness probe runs no client"));
            assert!(
                probe.tokens.contains(&port),
                "{at}: readiness probe not on port {port}"
            );
            let real = srv.addr.port().to_string();
            let argv: Vec<&str> = probe
                .tokens
                .iter()
                .map(|t| {
                    if *t == port {
                        real.as_str()
                    } else {
                        t.as_str()
                    }
                })
                .collect();
            let mut child = command_of("client")
                .args(&argv)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let st = wait_bounded(&mut child, GUARD);
            assert!(
                st.success(),
                "{at}: readiness probe `client {argv:?}` failed: {st}"
            );

            let fin = srv.stop();
            assert!(
                fin.status.success(),
                "{at}: server exit {}: {}",
                fin.status,
                fin.stderr
            );
            started.push(at);
        }
    }
    assert!(started.len() >= 2, "server workloads run: {started:?}");
}

/// The loadgen run in the Job `job` (with the container's label).
fn loadgen_run(job: &Doc, bin: &str) -> (String, Invocation) {
    let (at, runs) = container_runs(job, job.containers()[0]);
    let run = runs.into_iter().find(|r| r.bin == bin);
    (
        at.clone(),
        run.unwrap_or_else(|| panic!("{at}: runs no {bin}")),
    )
}

/// Splits `a b > FILE` into the args and FILE.
fn redirected(tokens: &[String], at: &str) -> (Vec<String>, PathBuf) {
    let i = tokens.iter().position(|t| t == ">");
    let i = i.unwrap_or_else(|| panic!("{at}: stdout goes to no file"));
    (tokens[..i].to_vec(), PathBuf::from(&tokens[i + 1]))
}

/// `/out/...` of the manifests moved into `dir`; a `*` pattern expanded
/// there the way `sh` would (sorted).
fn in_dir(tokens: &[String], dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for t in tokens {
        let Some(rest) = t.strip_prefix("/out/") else {
            out.push(t.clone());
            continue;
        };
        let Some((pre, post)) = rest.split_once('*') else {
            out.push(dir.join(rest).display().to_string());
            continue;
        };
        let mut hits: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(pre) && n.ends_with(post))
            .map(|n| dir.join(n).display().to_string())
            .collect();
        hits.sort();
        assert!(
            !hits.is_empty(),
            "{t}: matches nothing in {}",
            dir.display()
        );
        out.extend(hits);
    }
    out
}

#[test]
fn every_loadgen_shard_runs_as_its_job_says_and_the_merge_job_merges_them() {
    let docs = manifests();
    let jobs = of_kind(&docs, "Job");
    let job = jobs
        .iter()
        .find(|j| j.yaml["spec"]["completionMode"].as_str() == Some("Indexed"))
        .expect("the Indexed loadgen Job");
    let n = job.yaml["spec"]["completions"].as_i64().unwrap();
    let (at, run) = loadgen_run(job, "loadgen");
    let dir = std::env::temp_dir().join(format!("k8s-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let srv = ServerProc::start(&["--threads", "2", "--reuseport"]);
    // Loopback and a light load: the command's shape is under test, not speed.
    let tokens = with_values(
        &run.tokens,
        &[
            ("--target", &srv.addr.to_string()),
            ("--rate", "3000"),
            ("--duration", "1"),
        ],
        &at,
    );
    let shard_pending =
        !in_help(&help_of("loadgen"), "--shard") && pending("loadgen", "--shard").is_some();
    let mut children = Vec::new();
    for i in 0..n {
        let index = i.to_string();
        let mut mine: Vec<String> = tokens
            .iter()
            .map(|t| t.replace("$(JOB_COMPLETION_INDEX)", &index))
            .collect();
        if shard_pending {
            // Until the shard branch lands each index runs the whole schedule.
            let s = mine.iter().position(|t| t == "--shard").unwrap();
            mine.drain(s..s + 2);
        }
        let (args, out) = redirected(&in_dir(&mine, &dir), &at);
        eprintln!("{at}: loadgen {}", args.join(" "));
        let file = File::create(&out).unwrap();
        let child = command_of("loadgen")
            .args(&args)
            .stdout(file)
            .spawn()
            .unwrap();
        children.push((out, child));
    }
    for (out, mut child) in children {
        let st = wait_bounded(&mut child, LOADGEN_GUARD);
        assert!(
            st.success(),
            "{at}: loadgen for {} exited {st}",
            out.display()
        );
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", out.display()));
        assert_loadgen_consistent(&report);
        let hlog = out.with_extension("hlog");
        assert!(
            std::fs::metadata(&hlog)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{} empty",
            hlog.display()
        );
    }
    drop(srv);

    let merge_job = jobs
        .iter()
        .find(|j| j.name() == "loadgen-merge")
        .expect("Job loadgen-merge");
    let (mat, merge) = loadgen_run(merge_job, "loadgen merge");
    let (mut args, out) = redirected(&in_dir(&merge.tokens, &dir), &mat);
    if shard_pending {
        // This tree's merge reads interval logs only: JSON reports come with the shard branch.
        args.retain(|a| !a.ends_with(".json"));
    }
    let res = command_of("loadgen merge")
        .args(&args)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{mat}: `loadgen merge {args:?}`: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    File::create(&out).unwrap().write_all(&res.stdout).unwrap();
    let merged: serde_json::Value = serde_json::from_slice(&res.stdout).expect("merged JSON");
    assert!(
        merged.as_object().is_some_and(|o| !o.is_empty()),
        "{mat}: {merged}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn probes_are_bounded_by_their_own_timeouts() {
    // An exec probe's client must give up (--timeout) before the kubelet
    // kills it (timeoutSeconds), or a hung server reads as a probe timeout.
    let mut probes = 0;
    for d in manifests() {
        for c in d.containers() {
            let (at, _) = container_runs(&d, c);
            let exec = strings(&c["readinessProbe"]["exec"]["command"], &at);
            let Some(probe) = invocations(&exec).into_iter().find(|r| r.bin == "client") else {
                continue;
            };
            let ms: u64 = value_of(&probe.tokens, "--timeout")
                .expect("--timeout")
                .parse()
                .unwrap();
            let secs = c["readinessProbe"]["timeoutSeconds"].as_i64().unwrap_or(1) as u64;
            assert!(
                Duration::from_millis(ms) < Duration::from_secs(secs),
                "{at}: --timeout {ms} ms vs timeoutSeconds {secs}"
            );
            probes += 1;
        }
    }
    assert!(probes >= 2, "client probes found: {probes}");
}
