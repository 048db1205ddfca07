//! Runs what contrib/k8s runs, on loopback, with no cluster: each server
//! workload's own args (bind address and ports moved to loopback and
//! ephemeral ports) start a server that passes the manifest's own liveness
//! (HTTP GET) and readiness (exec) probes; the loadgen Job's shard command,
//! once per index, runs against a server and writes its files; the merge
//! Job's command merges them.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::k8s::{command_of, container_runs, invocations, manifests, of_kind, strings, Doc};
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

/// The words of the `sh -c` script of a Job's first container.
fn script_of(job: &Doc) -> (String, Vec<String>) {
    let c = job.containers()[0];
    let (at, _) = container_runs(job, c);
    let argv: Vec<String> = strings(&c["command"], &at)
        .into_iter()
        .chain(strings(&c["args"], &at))
        .collect();
    match &argv[..] {
        [sh, dash_c, script] if sh.ends_with("/sh") && dash_c == "-c" => {
            (at, script.split_whitespace().map(String::from).collect())
        }
        _ => panic!("{at}: not `sh -c SCRIPT`: {argv:?}"),
    }
}

/// `sh -c` with `words` as the pod runs them: `$(JOB_COMPLETION_INDEX)`
/// expanded (as Kubernetes does), /usr/local/bin/ our build's binaries,
/// /out/ in `dir`.
fn sh(words: &[String], index: &str, dir: &Path) -> Command {
    let bins = Path::new(env!("CARGO_BIN_EXE_loadgen")).parent().unwrap();
    let script: Vec<String> = words
        .iter()
        .map(|w| {
            let w = w.replace("$(JOB_COMPLETION_INDEX)", index);
            let w = match w.strip_prefix("/usr/local/bin/") {
                Some(b) => bins.join(b).display().to_string(),
                None => w,
            };
            match w.strip_prefix("/out/") {
                Some(rest) => dir.join(rest).display().to_string(),
                None => w,
            }
        })
        .collect();
    eprintln!("sh -c '{}'", script.join(" "));
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script.join(" "));
    cmd
}

/// The file `words` redirect stdout to (`> FILE`).
fn redirect_target(words: &[String], at: &str) -> String {
    let i = words.iter().position(|t| t == ">");
    let i = i.unwrap_or_else(|| panic!("{at}: stdout goes to no file"));
    words[i + 1].clone()
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
    let (at, words) = script_of(job);
    let dir = std::env::temp_dir().join(format!("k8s-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let srv = ServerProc::start(&["--threads", "2", "--reuseport"]);
    // Loopback and a light load: the command's shape is under test, not speed.
    let words = with_values(
        &words,
        &[
            ("--target", &srv.addr.to_string()),
            ("--rate", "3000"),
            ("--duration", "1"),
        ],
        &at,
    );
    let report = redirect_target(&words, &at);
    let hlog = value_of(&words, "--hlog").expect("--hlog");
    let (mut sent, mut received) = (0, 0);
    let mut children = Vec::new();
    for i in 0..n {
        let index = i.to_string();
        let child = sh(&words, &index, &dir).spawn().unwrap();
        children.push((index, child));
    }
    for (index, mut child) in children {
        let st = wait_bounded(&mut child, LOADGEN_GUARD);
        assert!(st.success(), "{at}: index {index} exited {st}");
        let in_dir = |f: &str| {
            let f = f.replace("$(JOB_COMPLETION_INDEX)", &index);
            dir.join(f.strip_prefix("/out/").expect("a file in /out"))
        };
        let out = in_dir(&report);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", out.display()));
        assert_loadgen_consistent(&json);
        assert_eq!(json["shard"], format!("{index}/{n}"), "{at}");
        sent += json["sent"].as_u64().unwrap();
        received += json["received"].as_u64().unwrap();
        let hlog = in_dir(&hlog);
        let len = std::fs::metadata(&hlog).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{}: empty or missing", hlog.display());
    }
    drop(srv);

    let merge_job = jobs
        .iter()
        .find(|j| j.name() == "loadgen-merge")
        .expect("Job loadgen-merge");
    let (mat, words) = script_of(merge_job);
    let merged = redirect_target(&words, &mat);
    let res = sh(&words, "", &dir).output().unwrap();
    assert!(
        res.status.success(),
        "{mat}: exit {}: {}",
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    let file = dir.join(merged.strip_prefix("/out/").unwrap());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap())
        .unwrap_or_else(|e| panic!("{mat}: {}: not JSON: {e}", file.display()));
    assert!(
        json.as_object().is_some_and(|o| !o.is_empty()),
        "{mat}: {json}"
    );
    // One report of the N shards: the sums, latency from the summed hlogs.
    assert_eq!(json["shards"].as_u64(), Some(n as u64), "{mat}: {json}");
    assert_eq!(json["sent"].as_u64(), Some(sent), "{mat}: {json}");
    assert_eq!(json["received"].as_u64(), Some(received), "{mat}: {json}");
    assert!(
        json["latency_us"]["p50"].as_f64().is_some(),
        "{mat}: {json}"
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
