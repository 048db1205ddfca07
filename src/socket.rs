//! Creating and binding the server's UDP sockets (socket2), with errors that
//! name the address and say what to do.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::io::force_buffer_size;

/// Default `SO_RCVBUF` request: 4 MiB absorbs bursts of ~60k small
/// datagrams (the kernel's default of 208 KiB overflows at 200k/s here).
pub const DEFAULT_RECV_BUFFER: usize = 4 << 20;

/// Largest `--rcvbuf`/`--sndbuf` request per socket: 256 MiB (the kernel
/// doubles it). Larger requests are capped to it, so a typo cannot pin
/// gigabytes of kernel memory or wrap around the kernel's `int`.
pub const MAX_BUFFER: usize = 256 << 20;

/// Optional kernel buffer sizes. The kernel doubles what is asked for; an
/// unprivileged request is capped at `net.core.rmem_max` / `wmem_max`, while
/// with `CAP_NET_ADMIN` the cap is lifted (`SO_RCVBUFFORCE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferSizes {
    /// `SO_RCVBUF` request in bytes.
    pub recv: Option<usize>,
    /// `SO_SNDBUF` request in bytes.
    pub send: Option<usize>,
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Adds advice for the bind errors users meet most.
fn bind_error(e: io::Error, addr: SocketAddr) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "another process is bound to UDP port {port} (find it with `ss -ulnp | grep :{port}`); \
             stop it or pick another port with --port",
            port = addr.port()
        ),
        Some(libc::EACCES) => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a port of 1024 or above \
             (e.g. --port 8888), or run `sudo setcap cap_net_bind_service=+ep` on the binary \
             (asked for port {})",
            addr.port()
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "{} is not an address of this machine: use 0.0.0.0 (all IPv4), :: (IPv4 and IPv6) \
             or an address shown by `ip addr`",
            addr.ip()
        ),
        Some(libc::EAFNOSUPPORT) => {
            "IPv6 is disabled on this machine: bind an IPv4 address such as 0.0.0.0".into()
        }
        _ => "check --bind and --port".into(),
    };
    io::Error::new(
        e.kind(),
        format!("cannot bind UDP socket to {addr}: {e}; {hint}"),
    )
}

/// Creates one UDP socket bound to `addr`. `[::]` is dual-stack (IPv4 and
/// IPv6). With `reuseport`, several sockets may bind the same port and the
/// kernel spreads flows over them.
pub fn bind_udp(addr: SocketAddr, reuseport: bool, bufs: BufferSizes) -> io::Result<UdpSocket> {
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP)).map_err(|e| {
        let hint =
            if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
                "; too many open files: raise the limit with `ulimit -n`"
            } else if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                "; this address family is not supported here: bind an IPv4 address such as 0.0.0.0"
            } else {
                ""
            };
        io::Error::new(
            e.kind(),
            format!("cannot create UDP socket for {addr}: {e}{hint}"),
        )
    })?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)
            .map_err(|e| with_context(e, format!("cannot make {addr} dual-stack")))?;
    }
    if reuseport {
        sock.set_reuse_port(true)
            .map_err(|e| with_context(e, "cannot set SO_REUSEPORT".into()))?;
    }
    if let Some(n) = bufs.recv {
        if force_buffer_size(sock.as_raw_fd(), true, n).is_err() {
            sock.set_recv_buffer_size(n)
                .map_err(|e| with_context(e, format!("cannot set SO_RCVBUF to {n}")))?;
        }
    }
    if let Some(n) = bufs.send {
        if force_buffer_size(sock.as_raw_fd(), false, n).is_err() {
            sock.set_send_buffer_size(n)
                .map_err(|e| with_context(e, format!("cannot set SO_SNDBUF to {n}")))?;
        }
    }
    sock.bind(&addr.into()).map_err(|e| bind_error(e, addr))?;
    Ok(sock.into())
}

/// The sockets for `n` workers: with `reuseport`, `n` sockets bound to one
/// port (port 0 resolves to one free port shared by all); otherwise one
/// socket, duplicated so every worker has a handle to it.
pub fn bind_workers(
    addr: SocketAddr,
    n: usize,
    reuseport: bool,
    bufs: BufferSizes,
) -> io::Result<Vec<UdpSocket>> {
    refuse_group_address(addr)?;
    if reuseport && addr.port() != 0 {
        // A reuseport group is open to any socket of the same user with
        // SO_REUSEPORT: one already there would silently take a share of
        // the flows. A plain bind fails if anyone holds the port.
        drop(bind_udp(addr, false, BufferSizes::default()).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    e.kind(),
                    format!(
                        "UDP port {port} at {ip} is already in use (find it with `ss -ulnp | grep :{port}`); \
                         --reuseport will not join a group another process started, since it \
                         would silently take a share of the flows: stop it or pick another port",
                        port = addr.port(),
                        ip = addr.ip()
                    ),
                )
            } else {
                e
            }
        })?);
    }
    let first = bind_udp(addr, reuseport, bufs)?;
    let bound = first.local_addr()?;
    let mut socks = vec![first];
    for _ in 1..n {
        let s = if reuseport {
            bind_udp(bound, true, bufs)?
        } else {
            socks[0]
                .try_clone()
                .map_err(|e| with_context(e, "cannot duplicate the server socket".into()))?
        };
        socks.push(s);
    }
    Ok(socks)
}

/// A server bound to a multicast or broadcast address would answer
/// datagrams sent to a whole network: refused.
fn refuse_group_address(addr: SocketAddr) -> io::Result<()> {
    let group = match addr.ip() {
        std::net::IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        std::net::IpAddr::V6(a) => a.is_multicast(),
    };
    if group {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot bind to {}: it is a multicast or broadcast address, and an echo server \
                 there would answer datagrams sent to a whole network; bind a unicast address \
                 (or 0.0.0.0 / :: for all)",
                addr.ip()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_a_real_port_shared_by_reuseport_workers() {
        let socks = bind_workers(
            "127.0.0.1:0".parse().unwrap(),
            3,
            true,
            BufferSizes::default(),
        )
        .unwrap();
        let port = socks[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
    }

    #[test]
    fn address_in_use_names_address_and_remedy() {
        let a = bind_udp(
            "127.0.0.1:0".parse().unwrap(),
            false,
            BufferSizes::default(),
        )
        .unwrap();
        let addr = a.local_addr().unwrap();
        let e = bind_udp(addr, false, BufferSizes::default()).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("ss -ulnp"), "{msg}");
    }

    #[test]
    fn receive_buffer_request_is_applied_and_doubled() {
        let bufs = BufferSizes {
            recv: Some(1 << 20),
            send: None,
        };
        let s: Socket = bind_udp("127.0.0.1:0".parse().unwrap(), false, bufs)
            .unwrap()
            .into();
        let got = s.recv_buffer_size().unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        // Privileged: forced past the cap, doubled. Unprivileged: capped at rmem_max, doubled.
        assert!(
            got == 2 << 20 || got == 2 * rmem_max.min(1 << 20),
            "SO_RCVBUF {got}"
        );
    }

    #[test]
    fn foreign_address_is_explained() {
        // 192.0.2.1 (TEST-NET-1) is never assigned to this machine; bind fails locally, nothing is sent.
        let e = bind_udp(
            "192.0.2.1:0".parse().unwrap(),
            false,
            BufferSizes::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not an address of this machine"),
            "{e}"
        );
    }

    #[test]
    fn dual_stack_serves_ipv4_when_ipv6_exists() {
        let Ok(s) = bind_udp("[::]:0".parse().unwrap(), false, BufferSizes::default()) else {
            return; // IPv6 disabled on this host: nothing to check
        };
        let port = s.local_addr().unwrap().port();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"v4", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 4];
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"v4");
        assert_eq!(from.port(), c.local_addr().unwrap().port());
    }

    #[test]
    fn group_addresses_are_refused() {
        for a in ["224.0.0.1:0", "255.255.255.255:0", "[ff02::1]:0"] {
            let e = bind_workers(a.parse().unwrap(), 1, false, BufferSizes::default()).unwrap_err();
            assert!(e.to_string().contains("multicast or broadcast"), "{e}");
        }
    }

    #[test]
    fn reuseport_refuses_to_join_a_foreign_group() {
        // Another process of the same user, already in a reuseport group.
        let foreign =
            bind_udp("127.0.0.1:0".parse().unwrap(), true, BufferSizes::default()).unwrap();
        let addr = foreign.local_addr().unwrap();
        let e = bind_workers(addr, 2, true, BufferSizes::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("will not join"), "{e}");
        drop(foreign);
        // Free again: the group is ours.
        assert_eq!(
            bind_workers(addr, 2, true, BufferSizes::default())
                .unwrap()
                .len(),
            2
        );
    }
}
