//! systemd integration: readiness notification (`Type=notify`) over a Unix
//! datagram socket of the test's own named by `NOTIFY_SOCKET`, and the
//! shipped unit (`contrib/systemd/udp-echo.service`) and environment example
//! (`contrib/systemd/udp-echo.env`) checked against `server --help`.

mod util;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use util::help::{assert_flags_known, cargo_bins, flags_in, read_repo_file};
use util::{client_socket, echo, server_bin, server_cmd, ServerProc, GUARD};

const UNIT: &str = "contrib/systemd/udp-echo.service";
const ENV: &str = "contrib/systemd/udp-echo.env";

/// The next notification datagram (bounded wait), as text.
fn next_message(sock: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no {what} notification within {GUARD:?}: {e}"),
    }
}

#[test]
fn notify_ready_when_serving_and_stopping_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("udp-echo-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(GUARD)).unwrap();

    let server = ServerProc::spawn_cmd(
        server_cmd(&["--threads", "2", "--reuseport"]).env("NOTIFY_SOCKET", &path),
    );

    // READY=1 is the first message, and its STATUS= names the bound address:
    // the test learns the port only from it, so the echo right after proves
    // the server was serving when it said READY.
    let ready = next_message(&notify, "READY=1");
    let lines: Vec<&str> = ready.lines().collect();
    assert!(
        lines.contains(&"READY=1"),
        "first notification is not READY=1: {ready:?}"
    );
    let status = lines
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .unwrap_or_else(|| panic!("READY=1 without STATUS=listening on ...: {ready:?}"));
    let mut addr: SocketAddr = status.split_whitespace().next().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0, "STATUS names no real port: {status}");
    addr.set_ip("127.0.0.1".parse().unwrap());
    let sock = client_socket(addr);
    assert_eq!(echo(&sock, addr, b"ready?"), b"ready?");

    server.signal(libc::SIGTERM);
    let stopping = next_message(&notify, "STOPPING=1");
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "after SIGTERM the notification is not STOPPING=1: {stopping:?}"
    );
    let done = server.wait_exit();
    assert_eq!(
        done.status.code(),
        Some(0),
        "exit after SIGTERM; stderr: {}",
        done.stderr
    );
    assert!(
        !done.stderr.contains("warning: cannot send"),
        "{}",
        done.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Key=value` lines of the `[Service]` section (comments skipped).
fn service_entries(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else if let (Some((k, v)), "[Service]") = (line.split_once('='), section) {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn unit_runs_the_server_with_known_flags_and_is_hardened() {
    let unit = read_repo_file(UNIT);
    let entries = service_entries(&unit);
    let get = |key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let exec = get("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart= in {UNIT}");
    let mut words = exec[0].split_whitespace();
    let program = words.next().unwrap();
    let name = program.rsplit('/').next().unwrap();
    assert!(
        cargo_bins().contains(name),
        "ExecStart runs {program}, not a [[bin]] of Cargo.toml"
    );
    assert_eq!(name, "server");
    assert!(
        exec[0].contains("$UDP_ECHO_ARGS"),
        "ExecStart must pass $UDP_ECHO_ARGS"
    );
    assert_eq!(get("EnvironmentFile"), ["-/etc/default/udp-echo"]);
    // Flags on ExecStart= and in the default Environment= line.
    let mut used = flags_in(exec[0]);
    for env in get("Environment") {
        used.extend(flags_in(env));
    }
    assert!(!used.is_empty(), "no default flags found in {UNIT}");
    assert_flags_known(server_bin(), &used, UNIT);

    let required = [
        ("Type", "notify"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("MemoryDenyWriteExecute", "yes"),
    ];
    for (key, value) in required {
        assert!(get(key).contains(&value), "{UNIT} lacks {key}={value}");
    }
    // Syscall filters must leave io_uring (--io uring) allowed: @system-service
    // includes @aio, which holds io_uring_setup/enter/register.
    for filter in get("SystemCallFilter") {
        if let Some(denied) = filter.strip_prefix('~') {
            assert!(
                !denied.contains("io_uring") && !denied.contains("@aio"),
                "{UNIT}: SystemCallFilter={filter} denies io_uring (--io uring)"
            );
        } else {
            assert!(
                ["@system-service", "@aio", "io_uring_setup"]
                    .iter()
                    .any(|s| filter.contains(s)),
                "{UNIT}: SystemCallFilter={filter} does not allow io_uring (--io uring)"
            );
        }
    }
    // The drop-in example for ports below 1024 is there, commented.
    for cap in [
        "#   AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "#   CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
    ] {
        assert!(
            unit.contains(cap),
            "{UNIT} lacks the commented drop-in line {cap}"
        );
    }
}

#[test]
fn help_describes_the_notifications() {
    let out = std::process::Command::new(server_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for what in ["NOTIFY_SOCKET", "READY=1", "STOPPING=1"] {
        assert!(help.contains(what), "server --help does not mention {what}");
    }
}

#[test]
fn env_example_uses_only_server_flags() {
    let env = read_repo_file(ENV);
    let active: Vec<&str> = env
        .lines()
        .filter(|l| l.starts_with("UDP_ECHO_ARGS="))
        .collect();
    assert_eq!(
        active.len(),
        1,
        "{ENV} must set UDP_ECHO_ARGS once (uncommented)"
    );
    // Every flag, commented examples included.
    let used = flags_in(&env);
    assert!(used.contains("--port"), "{ENV} names no --port: {used:?}");
    assert_flags_known(server_bin(), &used, ENV);
}

/// `systemd-analyze verify` on the unit (ExecStart pointed at the binary
/// built for this run), where systemd's tools are installed; CI does not
/// require them, so without them this says so on stderr and checks nothing.
#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let probe = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("systemd-analyze not installed: unit not verified (apt package systemd)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("udp-echo-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("udp-echo.service");
    let text = read_repo_file(UNIT).replace("/usr/local/bin/server", server_bin());
    std::fs::write(&unit, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("udp-echo.service"),
        "systemd-analyze verify {UNIT}: {said}"
    );
}
