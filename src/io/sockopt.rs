//! Socket options socket2 lacks, the kernel's per-socket drop counter
//! (`SO_MEMINFO`), the `IP_RECVERR` error queue, and a plain `recv`.

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// `SO_MEMINFO` (asm-generic value, the same on every Linux architecture
/// this builds for); libc does not export it.
const SO_MEMINFO: libc::c_int = 55;
/// Entries of the `SO_MEMINFO` array (`SK_MEMINFO_VARS`).
const SK_MEMINFO_VARS: usize = 9;

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its exact size is passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const i32).cast(),
        mem::size_of::<i32>() as libc::socklen_t
    ))
    .map(|_| ())
}

/// Sets `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (`recv` chooses which), which
/// ignore the `net.core.[rw]mem_max` caps but need `CAP_NET_ADMIN`.
pub fn force_buffer_size(fd: RawFd, recv: bool, bytes: usize) -> io::Result<()> {
    let name = if recv {
        libc::SO_RCVBUFFORCE
    } else {
        libc::SO_SNDBUFFORCE
    };
    set_int_opt(
        fd,
        libc::SOL_SOCKET,
        name,
        bytes.min(i32::MAX as usize) as i32,
    )
}

/// Asks the kernel to stamp every datagram on arrival (`SO_TIMESTAMPNS`).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Asks the kernel to attach its per-socket drop counter to received
/// datagrams (`SO_RXQ_OVFL`). Only current when a datagram is queued: the
/// exact figure is [`socket_drops`].
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// `UDP_GRO`: the kernel may hand over several datagrams of one flow as
/// one coalesced train, with a `UDP_GRO` control message giving the
/// segment size. Fails where the kernel lacks it (before Linux 5.0).
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// `IP_RECVERR` on an IPv4 socket (tests use it to provoke ICMP errors).
pub fn enable_ip_recverr(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
}

/// Extended error reporting: with `IP_RECVERR` (and `IPV6_RECVERR` on an
/// IPv6 socket) a send the device queue refused fails with `ENOBUFS`
/// instead of being reported as sent, and ICMP errors are queued on the
/// socket's error queue (drained with [`drain_error_queue`]).
pub fn enable_recverr(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
        // Dual-stack sockets carry IPv4 too; not fatal where refused.
        let _ = enable_ip_recverr(fd);
        Ok(())
    } else {
        enable_ip_recverr(fd)
    }
}

/// Asks for each datagram's destination (`IP_PKTINFO`, and on an IPv6
/// socket `IPV6_RECVPKTINFO` too; a dual-stack socket reports IPv4
/// datagrams with `IP_PKTINFO`), so replies can come from the address the
/// request was sent to and group destinations can be refused.
pub fn enable_pktinfo(fd: RawFd, ipv6: bool) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    if ipv6 {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    }
    Ok(())
}

/// Asks for each datagram's IPv4 TTL (`IP_RECVTTL`, which a dual-stack
/// socket also reports for IPv4 datagrams) and, on an IPv6 socket, its hop
/// limit (`IPV6_RECVHOPLIMIT`).
pub fn enable_recv_ttl(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
        // Dual-stack sockets carry IPv4 too; not fatal where refused.
        let _ = set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1);
        Ok(())
    } else {
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)
    }
}

/// The socket's own drop counter (`SO_MEMINFO[SK_MEMINFO_DROPS]`), the
/// figure `/proc/net/udp` shows in its `drops` column: datagrams the kernel
/// discarded for this socket (receive buffer full, among others).
pub fn socket_drops(fd: RawFd) -> io::Result<u32> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` has `len` writable bytes and `len` is a live socklen_t;
    // the kernel writes at most `len` bytes and updates `len`.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        SO_MEMINFO,
        info.as_mut_ptr().cast(),
        &mut len
    ))?;
    let idx = libc::SK_MEMINFO_DROPS as usize;
    if (len as usize) < (idx + 1) * mem::size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO returned no drop counter",
        ));
    }
    Ok(info[idx])
}

/// Empties the socket's error queue (`MSG_ERRQUEUE`), at most `max`
/// entries, passing each entry's errno (from its `IP_RECVERR` /
/// `IPV6_RECVERR` `sock_extended_err`) to `on_error`; returns how many were
/// read. Each entry holds an ICMP error (or a local one) the kernel queued
/// because [`enable_recverr`] is on; left there, they would count against
/// the receive buffer. Reading one also clears the socket's pending error,
/// so the errors are counted here, where none can be missed.
#[allow(clippy::unnecessary_cast)]
pub fn drain_error_queue(fd: RawFd, max: usize, mut on_error: impl FnMut(i32)) -> usize {
    let mut data = [0u8; 64];
    let mut control = [0u64; 32];
    let mut name = super::addr::zeroed_storage();
    let mut n = 0;
    while n < max {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = mem::size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` points at a live local buffer of the
        // stated length.
        match syscall!(recvmsg(
            fd,
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT
        )) {
            Ok(_) => n += 1,
            Err(_) => break,
        }
        // SAFETY: the kernel filled `msg`'s control buffer with well-formed
        // cmsgs of `msg_controllen` bytes; the CMSG_* macros stay inside it
        // and the data read is unaligned-safe.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let lt = ((*c).cmsg_level, (*c).cmsg_type);
                if lt == (libc::IPPROTO_IP, libc::IP_RECVERR)
                    || lt == (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
                {
                    let e: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    on_error(e.ee_errno as i32);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    n
}

/// One `recv` into `buf` with `flags` (e.g. `MSG_DONTWAIT`); returns the
/// bytes stored.
pub fn recv_into(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags)).map(|n| n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn kernel_doubles_requested_buffer_sizes() {
        // The kernel quirk users trip over: SO_RCVBUF reports twice the request.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(65536).unwrap();
        assert_eq!(s.recv_buffer_size().unwrap(), 131072);
    }

    #[test]
    fn meminfo_counts_drops_when_the_buffer_is_full() {
        // Kernel quirk pinned down: a full receive buffer drops and counts in
        // SO_MEMINFO at once, while SO_RXQ_OVFL only reports it on the next
        // datagram that is queued.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = socket2::SockRef::from(&server);
        s.set_recv_buffer_size(4096).unwrap(); // the kernel's minimum applies
        let to = server.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(server.as_raw_fd()).unwrap(), 0);
        for _ in 0..200 {
            client.send_to(&[0u8; 1000], to).unwrap();
        }
        let drops = socket_drops(server.as_raw_fd()).unwrap();
        let mut queued = 0;
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2000];
        while server.recv(&mut buf).is_ok() {
            queued += 1;
        }
        assert!(drops > 0, "nothing dropped: {queued} queued");
        assert_eq!(drops + queued, 200);
    }

    #[test]
    fn error_queue_holds_icmp_errors_until_drained() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_recverr(server.as_raw_fd(), false).unwrap();
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = gone.local_addr().unwrap();
        drop(gone);
        server.send_to(b"x", dead).unwrap();
        // The ICMP port unreachable arrives synchronously on loopback.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut seen = Vec::new();
        assert_eq!(
            drain_error_queue(server.as_raw_fd(), 8, |e| seen.push(e)),
            1
        );
        assert_eq!(seen, [libc::ECONNREFUSED]);
        assert_eq!(drain_error_queue(server.as_raw_fd(), 8, |_| {}), 0);
    }
}
