//! Epoll I/O model, and readiness in general: a per-worker epoll instance
//! ([`Epoll::wait_for_work`] is the model's wait) and a one-socket `poll`.
//!
//! Workers that share one socket register it with `EPOLLEXCLUSIVE`, so a
//! datagram wakes one waiting worker, not all of them. While a worker holds
//! a send backlog that the socket refused (`EAGAIN`), it also waits for
//! `EPOLLOUT`, through a duplicate of its socket descriptor (an exclusive
//! registration cannot be modified, and one descriptor can be registered
//! once per epoll instance).

use std::io;
use std::os::fd::RawFd;

use super::waiter::{Held, Waited};

/// What a wait found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// A datagram (or an error) is waiting.
    pub readable: bool,
    /// The send buffer has room.
    pub writable: bool,
}

const IN_TOKEN: u64 = 0;
const OUT_TOKEN: u64 = 1;

/// One worker's epoll instance.
pub struct Epoll {
    fd: RawFd,
    out_fd: RawFd,
    out_registered: bool,
    idle_ms: i32,
}

impl Epoll {
    /// An epoll instance with `sock` registered for `EPOLLIN`, exclusively
    /// (`EPOLLEXCLUSIVE`) when `exclusive`.
    pub fn new(sock: RawFd, exclusive: bool) -> io::Result<Epoll> {
        // SAFETY: plain integer flags; the kernel returns a new descriptor.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `sock` is an open descriptor owned by the caller's socket.
        let out_fd = match syscall!(fcntl(sock, libc::F_DUPFD_CLOEXEC, 0)) {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: we own `fd` and close it once.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        let ep = Epoll {
            fd,
            out_fd,
            out_registered: false,
            idle_ms: 100,
        };
        let mut flags = libc::EPOLLIN as u32;
        if exclusive {
            flags |= libc::EPOLLEXCLUSIVE as u32;
        }
        let mut ev = libc::epoll_event {
            events: flags,
            u64: IN_TOKEN,
        };
        // SAFETY: both descriptors are open and `ev` is a valid event.
        syscall!(epoll_ctl(ep.fd, libc::EPOLL_CTL_ADD, sock, &mut ev))?;
        Ok(ep)
    }

    /// Sets how long an idle wait lasts (the worker checks for shutdown
    /// that often).
    pub fn with_idle(mut self, idle_ms: i32) -> Epoll {
        self.idle_ms = idle_ms;
        self
    }

    /// The epoll model's wait: for a datagram, and while echoes are
    /// `held`, for room to send (if the socket refused with `EAGAIN`) or
    /// the backlog's next retry or deadline.
    pub fn wait_for_work(&mut self, held: Option<Held>) -> io::Result<Waited> {
        let (want_out, timeout) = match held {
            Some(h) => (h.want_writable, h.timeout_ms),
            None => (false, self.idle_ms),
        };
        self.want_writable(want_out)?;
        let r = self.wait(timeout)?;
        Ok(Waited::after_ready(r, timeout, self.idle_ms))
    }

    /// Starts (`true`) or stops waiting for the socket to become writable.
    /// Only calls the kernel when the state changes.
    pub fn want_writable(&mut self, on: bool) -> io::Result<()> {
        if on == self.out_registered {
            return Ok(());
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLOUT as u32,
            u64: OUT_TOKEN,
        };
        let op = if on {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        // SAFETY: both descriptors are open and `ev` is a valid event.
        syscall!(epoll_ctl(self.fd, op, self.out_fd, &mut ev))?;
        self.out_registered = on;
        Ok(())
    }

    /// Waits up to `timeout_ms`; `EINTR` returns nothing ready.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<Ready> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // SAFETY: `evs` has room for the 2 events we ask for.
        let n = match syscall!(epoll_wait(self.fd, evs.as_mut_ptr(), 2, timeout_ms)) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let mut r = Ready::default();
        for ev in &evs[..n] {
            let (events, token) = (ev.events, ev.u64);
            if token == IN_TOKEN {
                r.readable = true;
            } else if events & libc::EPOLLOUT as u32 != 0 {
                r.writable = true;
            }
        }
        Ok(r)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own both descriptors and close each once.
        unsafe {
            libc::close(self.out_fd);
            libc::close(self.fd);
        }
    }
}

/// `poll` on one socket for readability and, if `want_out`, writability,
/// up to `timeout_ms`. `EINTR` returns nothing ready.
pub fn poll_one(fd: RawFd, want_out: bool, timeout_ms: i32) -> io::Result<Ready> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | if want_out { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd.
    match syscall!(poll(&mut p, 1, timeout_ms)) {
        Ok(_) => Ok(Ready {
            readable: p.revents & (libc::POLLIN | libc::POLLERR) != 0,
            writable: p.revents & libc::POLLOUT != 0,
        }),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Ready::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn readable_and_writable_are_reported_separately() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ep = Epoll::new(s.as_raw_fd(), true).unwrap();
        assert_eq!(ep.wait(0).unwrap(), Ready::default());
        ep.want_writable(true).unwrap();
        ep.want_writable(true).unwrap(); // no change: no EEXIST
        assert!(ep.wait(0).unwrap().writable);
        ep.want_writable(false).unwrap();
        s.send_to(b"x", s.local_addr().unwrap()).unwrap();
        let r = ep.wait(1000).unwrap();
        assert!(r.readable && !r.writable, "{r:?}");
        let r = poll_one(s.as_raw_fd(), true, 0).unwrap();
        assert!(r.readable && r.writable, "{r:?}");
    }
}
