//! The host's limit on memory queued in UDP sockets, `net.ipv4.udp_mem`,
//! against the receive buffers the server's sockets may fill.
//!
//! `/proc/sys/net/ipv4/udp_mem` holds three numbers of pages: min, pressure
//! and max (`tcp_mem`'s format). UDP has no memory-pressure mode, so the
//! first is the limit that bites: once the UDP sockets of the host together
//! hold more than `min` pages, every UDP socket that already holds
//! `net.ipv4.udp_rmem_min` bytes (4 KiB by default) drops what arrives,
//! whatever its own `SO_RCVBUF` allows (`__sk_mem_raise_allocated` in
//! `net/core/sock.c`; the kernel's `ip-sysctl` documentation says the
//! same). Send buffers do not count: UDP has no transmit memory accounting.
//!
//! Receive buffers are limits, not allocations, so nothing is spent at
//! start. But sockets whose buffers add up to the limit can take all of it
//! when they fill (a burst, a stalled worker): their buffers then never
//! reach their size, and every other UDP socket on the host (a DNS
//! resolver, NTP, ...) drops too. [`UdpMem::warning`] says so at start;
//! [`UdpMem::read`] is the only part that touches the file.

/// Where the kernel shows `net.ipv4.udp_mem`.
pub const PROC_PATH: &str = "/proc/sys/net/ipv4/udp_mem";

/// `net.ipv4.udp_mem`, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpMem {
    /// The limit for all UDP sockets together (see the module doc).
    pub min: u64,
    /// Kept for `tcp_mem`'s format; UDP does not use it.
    pub pressure: u64,
    /// A hard limit for every socket, even below `udp_rmem_min`.
    pub max: u64,
}

impl UdpMem {
    /// Parses the file's text: three numbers separated by white space.
    pub fn parse(text: &str) -> Option<UdpMem> {
        let mut n = text.split_whitespace().map(|w| w.parse::<u64>().ok());
        let m = UdpMem {
            min: n.next()??,
            pressure: n.next()??,
            max: n.next()??,
        };
        n.next().is_none().then_some(m)
    }

    /// Reads [`PROC_PATH`]; `None` if it cannot be read or parsed.
    pub fn read() -> Option<UdpMem> {
        UdpMem::parse(&std::fs::read_to_string(PROC_PATH).ok()?)
    }

    /// The limit in bytes, for pages of `page` bytes.
    pub fn limit_bytes(&self, page: u64) -> u64 {
        self.min.saturating_mul(page)
    }

    /// The warning to give when the receive buffers of the server's
    /// sockets (`threads` of them with `reuseport`, else one shared socket,
    /// each of `per_socket` bytes as the kernel reports it) add up to the
    /// limit or more; `None` below it. `page` is the page size in bytes.
    pub fn warning(
        &self,
        page: u64,
        threads: usize,
        reuseport: bool,
        per_socket: u64,
    ) -> Option<String> {
        let sockets = if reuseport { threads.max(1) } else { 1 };
        let total = per_socket.saturating_mul(sockets as u64);
        let limit = self.limit_bytes(page);
        if total < limit {
            return None;
        }
        // Room for the server's buffers on top of what the host had for
        // every UDP socket; pressure and max kept at least as high.
        let raised = total.div_ceil(page.max(1)).saturating_add(self.min);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        Some(format!(
            "receive buffers of {:.1} MiB ({} x {per_socket} bytes) reach the {:.1} MiB that all UDP sockets on this host may hold together \
             (net.ipv4.udp_mem's first value, {} pages): past it every UDP socket, this server's too, drops datagrams once it holds \
             net.ipv4.udp_rmem_min; raise it (pages; it caps kernel memory, keep it well below RAM), e.g. \
             sysctl -w net.ipv4.udp_mem=\"{raised} {} {}\", or lower --rcvbuf{}",
            mib(total),
            if reuseport {
                format!("{sockets} SO_REUSEPORT sockets")
            } else {
                "one shared socket".to_string()
            },
            mib(limit),
            self.min,
            self.pressure.max(raised),
            self.max.max(raised),
            if reuseport { " or --threads" } else { "" },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const MIB: u64 = 1 << 20;

    #[test]
    fn parses_three_page_counts() {
        assert_eq!(
            UdpMem::parse("575799\t767734\t1151598\n"),
            Some(UdpMem {
                min: 575_799,
                pressure: 767_734,
                max: 1_151_598
            })
        );
        for bad in ["", "1 2", "1 2 3 4", "1 x 3", "-1 2 3"] {
            assert_eq!(UdpMem::parse(bad), None, "{bad:?}");
        }
    }

    /// A limit of 1 GiB (262144 pages of 4 KiB).
    fn one_gib() -> UdpMem {
        UdpMem {
            min: 262_144,
            pressure: 349_525,
            max: 524_288,
        }
    }

    #[test]
    fn warns_from_the_limit_on_counting_each_reuseport_socket() {
        let m = one_gib();
        assert_eq!(m.limit_bytes(PAGE), 1 << 30);
        // 3 x 256 MiB is below 1 GiB; 4 x 256 MiB reaches it.
        assert_eq!(m.warning(PAGE, 3, true, 256 * MIB), None);
        let w = m.warning(PAGE, 4, true, 256 * MIB).expect("a warning");
        assert!(w.starts_with("receive buffers of 1024.0 MiB (4 SO_REUSEPORT sockets x 268435456 bytes) reach the 1024.0 MiB"), "{w}");
        assert!(
            w.contains("net.ipv4.udp_mem's first value, 262144 pages"),
            "{w}"
        );
        // 262144 pages for the server plus the 262144 the host had.
        assert!(
            w.contains("sysctl -w net.ipv4.udp_mem=\"524288 524288 524288\""),
            "{w}"
        );
        assert!(w.ends_with("or lower --rcvbuf or --threads"), "{w}");
    }

    #[test]
    fn one_shared_socket_counts_once_whatever_the_threads() {
        let m = one_gib();
        assert_eq!(m.warning(PAGE, 64, false, 512 * MIB), None);
        let w = m.warning(PAGE, 64, false, 1024 * MIB).expect("a warning");
        assert!(w.contains("(one shared socket x 1073741824 bytes)"), "{w}");
        assert!(w.ends_with("or lower --rcvbuf"), "{w}");
    }

    #[test]
    fn extreme_values_neither_panic_nor_wrap() {
        let huge = UdpMem {
            min: u64::MAX,
            pressure: u64::MAX,
            max: u64::MAX,
        };
        for (page, per_socket) in [(u64::MAX, u64::MAX), (0, u64::MAX), (1, 0)] {
            let _ = huge.warning(page, 1024, true, per_socket);
        }
        // A limit of about half of u64: 2 x (u64::MAX / 2 + 1) would wrap
        // to 0; it saturates, and reaches the limit.
        let half = UdpMem {
            min: u64::MAX / 2 / PAGE,
            pressure: 0,
            max: 0,
        };
        assert!(half.warning(PAGE, 2, true, u64::MAX / 2 + 1).is_some());
    }
}
