//! `--rcvbuf` against the host's `net.ipv4.udp_mem`: forced receive buffers
//! that add up to its limit (its first value, in pages) give one warning
//! line before `listening on`, naming the sysctl and how to raise it; one
//! shared socket counts once however many workers share it. The sizes are
//! chosen from this host's `/proc/sys/net/ipv4/udp_mem`. Buffers are limits,
//! not allocations: nothing here fills them.

mod util;

use util::*;

/// The largest request (`--rcvbuf` is capped at 256 MiB) ...
const REQUEST: u64 = 256 << 20;
/// ... and what the kernel grants for it when forced: twice as much.
const GRANTED: u64 = 2 * REQUEST;
/// The most workers the server accepts.
const MAX_THREADS: u64 = 1024;

/// This host's UDP limit in bytes: `udp_mem`'s first value times the page size.
fn udp_limit_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/udp_mem").expect("udp_mem");
    let min: u64 = text
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("udp_mem is not three numbers: {text:?}"));
    // SAFETY: sysconf takes a plain integer and touches no memory of ours.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    min * u64::try_from(page).expect("page size")
}

/// Starts the server with `args` (small pools), stops it, and returns its
/// stderr lines up to and including `listening on`, after checking the
/// listening line reports `granted` bytes per socket.
fn startup_lines(args: &[&str], granted: u64) -> Vec<String> {
    let mut all = vec!["--pool-size", "64"];
    all.extend_from_slice(args);
    let f = ServerProc::start(&all).stop();
    assert_eq!(f.status.code(), Some(0), "{}", f.stderr);
    let lines: Vec<String> = f.stderr.lines().map(str::to_owned).collect();
    let end = lines
        .iter()
        .position(|l| l.contains("listening on"))
        .expect("listening line");
    assert!(
        lines[end].contains(&format!("rcvbuf {granted} bytes")),
        "forced buffer not granted: {}",
        lines[end]
    );
    lines[..=end].to_vec()
}

fn udp_mem_warnings(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("net.ipv4.udp_mem"))
        .collect()
}

#[test]
fn receive_buffers_reaching_udp_mem_are_warned_about_counting_each_socket() {
    if !prerequisite(is_root(), "REQUIRE_NETNS", "root (SO_RCVBUFFORCE)") {
        return;
    }
    let limit = udp_limit_bytes();
    // Each socket well below the limit (at most half of it), and enough
    // workers for their sockets to reach it with --reuseport.
    let request = REQUEST.min(limit / 4);
    let granted = 2 * request;
    let threads = limit.div_ceil(granted);
    assert!(
        threads <= MAX_THREADS,
        "net.ipv4.udp_mem allows {limit} bytes: even {MAX_THREADS} sockets of {GRANTED} bytes \
         (the largest forced buffer) stay below it, so no configuration reaches it on this host"
    );
    let (t, r) = (threads.to_string(), request.to_string());
    let lines = startup_lines(&["--threads", &t, "--reuseport", "--rcvbuf", &r], granted);
    let warned = udp_mem_warnings(&lines);
    assert_eq!(warned.len(), 1, "{lines:#?}");
    let w = warned[0];
    assert!(w.starts_with("server: warning: receive buffers of"), "{w}");
    assert!(
        w.contains(&format!(
            "({threads} SO_REUSEPORT sockets x {granted} bytes)"
        )),
        "{w}"
    );
    assert!(w.contains("sysctl -w net.ipv4.udp_mem=\""), "{w}");
    // The same workers sharing one socket: it counts once, below the limit.
    let lines = startup_lines(&["--threads", &t, "--rcvbuf", &r], granted);
    assert!(udp_mem_warnings(&lines).is_empty(), "{lines:#?}");
}
