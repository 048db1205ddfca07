//! What the soak test reads while the run goes on: the server's statistics
//! line (README, "Reading the statistics line"), its resident set size
//! (`VmRSS` in `/proc/PID/status`), and the kernel's receive-drop counters
//! of another process's UDP sockets (the `drops` column of `/proc/net/udp`
//! for the socket inodes listed in `/proc/PID/fd`), which is how drops on
//! loadgen's and the relay's own sockets are seen: neither reports them.

use std::collections::{BTreeMap, HashSet};

/// One statistics line: the counts of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tick {
    /// Seconds since the server started.
    pub at_s: f64,
    /// Datagrams received per second.
    pub rx: u64,
    /// Datagrams echoed per second.
    pub tx: u64,
    /// Datagrams dropped in the interval, all reasons.
    pub drops: u64,
    /// Echoes given up on in the interval.
    pub send_err: u64,
    /// Datagrams the kernel dropped for the server's sockets in the interval.
    pub kernel_drops: u64,
}

/// Parses a statistics line (`[    2.0s] rx 20000/s ... | drops 0 | send_err 0
/// recv_err 0 | kernel_drops 0 | ...`); None for any other line.
pub fn parse_stats_line(line: &str) -> Option<Tick> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (at, rest) = rest.split_once("s]")?;
    let mut t = Tick {
        at_s: at.trim().parse().ok()?,
        ..Tick::default()
    };
    let mut seen_rx = false;
    for field in rest.split('|') {
        let words: Vec<&str> = field.split_whitespace().collect();
        let num = |i: usize| -> Option<u64> { words.get(i)?.trim_end_matches("/s").parse().ok() };
        match words.first().copied() {
            Some("rx") => {
                t.rx = num(1)?;
                seen_rx = true;
            }
            Some("tx") => t.tx = num(1)?,
            Some("drops") => {
                // `drops 0` or `drops reason=count reason=count`.
                t.drops = words[1..]
                    .iter()
                    .map(|w| w.rsplit('=').next().and_then(|n| n.parse::<u64>().ok()))
                    .sum::<Option<u64>>()?;
            }
            Some("send_err") => t.send_err = num(1)?,
            Some("kernel_drops") => t.kernel_drops = num(1)?,
            _ => {}
        }
    }
    seen_rx.then_some(t)
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&text)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Socket inodes a process holds open (`socket:[N]` links in /proc/PID/fd).
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return set;
    };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    set.insert(n);
                }
            }
        }
    }
    set
}

/// (inode, local port, drops) for every line of a `/proc/net/udp{,6}` table.
fn parse_udp_table(text: &str) -> Vec<(u64, u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            Some((f.get(9)?.parse().ok()?, port, f.get(12)?.parse().ok()?))
        })
        .collect()
}

/// Follows the receive drops of one process's UDP sockets. The counters
/// only grow and vanish when a socket closes, so the highest value seen per
/// socket is kept; drops after the last sample are missed, which is why
/// these figures are reported as sampled, not exact.
#[derive(Debug, Default)]
pub struct SocketDrops {
    /// inode → (local port, most drops seen).
    seen: BTreeMap<u64, (u16, u64)>,
}

impl SocketDrops {
    /// Reads the counters of `pid`'s UDP sockets now.
    pub fn sample(&mut self, pid: u32) {
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            return;
        }
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for (inode, port, drops) in parse_udp_table(&text) {
                if inodes.contains(&inode) {
                    let e = self.seen.entry(inode).or_insert((port, 0));
                    e.1 = e.1.max(drops);
                }
            }
        }
    }

    /// Drops summed over the sockets bound to `port` (None: all sockets).
    pub fn total(&self, port: Option<u16>) -> u64 {
        self.seen
            .values()
            .filter(|(p, _)| port.map_or(true, |want| *p == want))
            .map(|(_, d)| d)
            .sum()
    }

    /// Sockets seen.
    pub fn sockets(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_line_from_the_readme() {
        let l = "[    2.0s] rx 20000/s 1.28 MB/s | tx 19990/s 1.28 MB/s | drops 0 | send_err 3 recv_err 0 | kernel_drops 7 | backlog 0 hw 19 stalls 0 | wake 0 spurious 0 | pool in-use/hw 32/51,32/32 exh 0 | lat us p50 19.2 p99 26.3 p99.9 130.4 max 830.5";
        let t = parse_stats_line(l).unwrap();
        assert_eq!(
            t,
            Tick {
                at_s: 2.0,
                rx: 20000,
                tx: 19990,
                drops: 0,
                send_err: 3,
                kernel_drops: 7
            }
        );
    }

    #[test]
    fn drop_reasons_are_summed() {
        let l = "[   10.0s] rx 5/s 0.00 MB/s | tx 1/s 0.00 MB/s | drops truncated=3 rate_limited=1 | send_err 0 recv_err 0 | kernel_drops 0 | lat us - (no echoes)";
        assert_eq!(parse_stats_line(l).unwrap().drops, 4);
        assert!(parse_stats_line("server: listening on 1.2.3.4:5 (x)").is_none());
        assert!(parse_stats_line("[not a line").is_none());
    }

    #[test]
    fn vmrss_and_udp_table() {
        assert_eq!(parse_vmrss("Name:\tx\nVmRSS:\t   4712 kB\n"), Some(4712));
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                 1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 123456 2 0000000000000000 42\n";
        assert_eq!(parse_udp_table(t), vec![(123456, 8080, 42)]);
    }

    #[test]
    fn own_socket_is_found() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let mut d = SocketDrops::default();
        d.sample(std::process::id());
        assert!(d.sockets() >= 1);
        assert_eq!(d.total(Some(port)), 0);
    }
}
