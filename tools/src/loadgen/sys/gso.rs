//! UDP GSO and GRO, part of `sys` (the loadgen's only unsafe code, which
//! this submodule inherits the `unsafe_code` allowance of; every block has
//! a `// SAFETY:` note):
//!
//! * [`send_train`]: one `sendmsg` with a `UDP_SEGMENT` control message, so
//!   the kernel cuts the buffer into datagrams of the segment size (the
//!   last may be shorter). It is all or nothing: the whole train goes or
//!   the call fails.
//! * [`set_gro`] (`UDP_GRO`) and [`read_control`]: the kernel may deliver
//!   a train as one coalesced read with a `UDP_GRO` control message that
//!   gives the segment size; `train::segments` cuts it up again. The same
//!   function reads the kernel's receive timestamp (`SO_TIMESTAMPNS`).
//! * [`is_refusal`]: the errors with which a kernel or a route refuses GSO
//!   (pinned in the tests below), after which loadgen sends one by one.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use super::set_int_opt;

/// Control-buffer room per received message, in u64 words so that the
/// buffer is aligned for `cmsghdr`: `SCM_TIMESTAMPNS` (a timespec, 32
/// bytes with its header) and `UDP_GRO` (an int, 24 bytes).
pub const CONTROL_WORDS: usize = 8;

/// Sends `data` on the connected socket `fd` as datagrams of `seg` bytes in
/// one `sendmsg(MSG_DONTWAIT)` with `UDP_SEGMENT`. Returns the bytes sent
/// (all of `data`).
pub fn send_train(fd: RawFd, data: &[u8], seg: usize) -> io::Result<usize> {
    let seg = u16::try_from(seg)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size over 65535"))?;
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are valid
    // (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size from its argument.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    debug_assert!(msg.msg_controllen <= mem::size_of_val(&control));
    // SAFETY: `msg` points at `control`, 32 zeroed bytes aligned for
    // cmsghdr, and msg_controllen (24) fits in it, so CMSG_FIRSTHDR returns
    // a pointer to its start, with room for the header and the u16 after
    // it (CMSG_LEN(2) <= CMSG_SPACE(2)); the u16 is written unaligned.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
    }
    // SAFETY: `msg` is fully initialised: one iovec over `data` (live for
    // the call, only read by the kernel), the control buffer above, no
    // name (the socket is connected).
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Whether `e`, from a [`send_train`] or a GSO/GRO socket option, means
/// that this kernel, socket or route does not do UDP GSO/GRO (rather than
/// a full buffer or a missing server): EIO (no checksum offload on the
/// route), EINVAL (too many segments, checksums off), EMSGSIZE (a segment
/// larger than the path MTU), ENOPROTOOPT / EOPNOTSUPP (no such option).
pub fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Asks whether the kernel knows `UDP_SEGMENT` (4.18+) by setting the
/// socket's default segment size to 0 (off), which changes nothing.
pub fn probe_gso(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Lets the kernel deliver coalesced trains on `fd` (`UDP_GRO`, 5.0+), or
/// stops it.
pub fn set_gro(fd: RawFd, on: bool) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
}

/// What the control messages of a received message say: its `UDP_GRO`
/// segment size (only coalesced reads carry one) and its kernel receive
/// time (`SCM_TIMESTAMPNS`, `CLOCK_REALTIME` ns).
pub fn read_control(hdr: &libc::msghdr) -> (Option<usize>, Option<u64>) {
    let (mut segment, mut stamp) = (None, None);
    if hdr.msg_control.is_null() || hdr.msg_controllen < mem::size_of::<libc::cmsghdr>() {
        return (segment, stamp);
    }
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed control messages (it shrinks msg_controllen to what it
    // wrote); CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length and
    // return null at the end, and the data are read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    segment = usize::try_from(v).ok().filter(|&s| s > 0);
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let t: libc::timespec = std::ptr::read_unaligned(data.cast());
                    stamp = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (segment, stamp)
}

/// Asks the kernel to stamp every datagram on arrival (`SO_TIMESTAMPNS`).
pub fn set_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

#[cfg(test)]
mod tests {
    use super::super::{poll, RecvBatch};
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (rx, tx)
    }

    fn wait(rx: &UdpSocket) {
        let mut fds = [libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 2_000_000_000).unwrap(), 1);
    }

    /// Receives until `want` bytes arrived: (length, GRO segment) per read.
    fn reads(rx: &UdpSocket, recv: &mut RecvBatch, want: usize) -> Vec<(usize, Option<usize>)> {
        let mut got = Vec::new();
        while got.iter().map(|g: &(usize, _)| g.0).sum::<usize>() < want {
            wait(rx);
            let n = recv.recv(rx.as_raw_fd()).unwrap();
            got.extend((0..n).map(|i| (recv.datagram(i).len(), recv.control(i).0)));
        }
        got
    }

    #[test]
    fn kernel_receive_time_comes_with_the_datagram() {
        let (rx, tx) = pair();
        set_timestamps(rx.as_raw_fd()).unwrap();
        let before = udp_packet_pool::io::now_realtime_ns();
        tx.send(&[1u8; 10]).unwrap();
        wait(&rx);
        let after = udp_packet_pool::io::now_realtime_ns();
        let mut recv = RecvBatch::new(8, 64);
        assert_eq!(recv.recv(rx.as_raw_fd()).unwrap(), 1);
        let (segment, stamp) = recv.control(0);
        assert_eq!(segment, None);
        let stamp = stamp.expect("SO_TIMESTAMPNS stamp");
        // On the wall clock and within the exchange. The kernel reads its
        // clock by another path than the vDSO, so the two may differ by a
        // few microseconds (seen once: 2 us after `after`): a 10 ms slack
        // still tells the wall clock from the monotonic one or from zero.
        const SLACK: u64 = 10_000_000;
        assert!(
            before - SLACK <= stamp && stamp <= after + SLACK,
            "{before} {stamp} {after}"
        );
    }

    #[test]
    fn a_train_arrives_as_datagrams_without_gro() {
        let (rx, tx) = pair();
        probe_gso(tx.as_raw_fd()).unwrap();
        let data: Vec<u8> = (0..350u32).map(|i| i as u8).collect();
        assert_eq!(send_train(tx.as_raw_fd(), &data, 100).unwrap(), 350);
        let mut recv = RecvBatch::new(8, 200);
        let got = reads(&rx, &mut recv, 350);
        assert_eq!(got, [(100, None), (100, None), (100, None), (50, None)]);
    }

    #[test]
    fn gro_delivers_the_train_whole_with_its_segment_size() {
        let (rx, tx) = pair();
        set_gro(rx.as_raw_fd(), true).unwrap();
        let data = vec![7u8; 350];
        send_train(tx.as_raw_fd(), &data, 100).unwrap();
        // A datagram sent alone carries no segment size.
        tx.send(&[1u8; 100]).unwrap();
        let mut recv = RecvBatch::new(8, 4096);
        let got = reads(&rx, &mut recv, 450);
        assert_eq!(got, [(350, Some(100)), (100, None)]);
    }

    /// The kernel's refusals that the fallback relies on (Linux 6.x; quinn-udp
    /// pins its GSO fallback the same way).
    #[test]
    fn kernel_refusals_are_recognised() {
        let (_rx, tx) = pair();
        let fd = tx.as_raw_fd();
        // More segments than UDP_MAX_SEGMENTS (64 before Linux 6.9, then 128).
        let e = send_train(fd, &[0u8; 129 * 40], 40).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(is_refusal(&e));
        // More than one UDP datagram can carry.
        let e = send_train(fd, &[0u8; 60 * 1100], 1100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{e}");
        assert!(is_refusal(&e));
        // Checksums off (SO_NO_CHECK): GSO needs them.
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
        let e = send_train(fd, &[0u8; 400], 100).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(is_refusal(&e));
        // Not refusals: a full buffer, a missing server.
        assert!(!is_refusal(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(!is_refusal(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }
}
