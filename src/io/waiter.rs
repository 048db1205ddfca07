//! How a worker waits for datagrams: one [`Waiter`] per worker, picked by
//! its [`IoMode`], over the I/O models side by side ([`blocking`],
//! [`epoll`], [`spin`]). The worker asks [`Waiter::wait`] before each
//! receive and never learns which model it runs; the receive itself is the
//! same batched `recvmmsg` ([`RecvBatch`](super::RecvBatch)) for all three.
//!
//! [`blocking`]: super::blocking
//! [`epoll`]: super::epoll
//! [`spin`]: super::spin

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::{blocking, spin, Epoll, Ready, RecvWait};

/// How a worker waits for datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// Blocking batched receive (`recvmmsg` + `MSG_WAITFORONE`, woken every 100 ms).
    #[default]
    Blocking,
    /// Non-blocking socket, `epoll_wait` for readiness (`EPOLLEXCLUSIVE`).
    Epoll,
    /// Non-blocking busy polling: lowest latency, one core per worker at 100%.
    Spin,
    /// io_uring: multishot `recvmsg` into a ring of the pool's buffers
    /// (`io::uring`); falls back to `epoll` where io_uring is unavailable.
    Uring,
}

/// What the send backlog asks of a wait while it holds echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The socket refused with `EAGAIN`: wake when it is writable.
    pub want_writable: bool,
    /// Wake by then at the latest (the next retry or deadline), in ms.
    pub timeout_ms: i32,
}

/// What a wait found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Receive now, with this wait; `woken`: a readiness wake-up said a
    /// datagram is there (the worker counts it, and counts it spurious if
    /// the receive then finds nothing).
    Receive { wait: RecvWait, woken: bool },
    /// Nothing to receive this round; `idle`: a whole idle period passed.
    Idle { idle: bool },
}

/// The result of [`Waiter::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    /// What to do next.
    pub wake: Wake,
    /// The send buffer has room: the backlog may try again.
    pub writable: bool,
}

impl Waited {
    /// After a readiness wait of `timeout_ms` found `r`: receive without
    /// waiting if readable (a wake-up), else idle (a whole idle period if
    /// the wait was as long as `idle_ms`).
    pub fn after_ready(r: Ready, timeout_ms: i32, idle_ms: i32) -> Waited {
        Waited {
            wake: if r.readable {
                Wake::Receive {
                    wait: RecvWait::DontWait,
                    woken: true,
                }
            } else {
                Wake::Idle {
                    idle: timeout_ms >= idle_ms,
                }
            },
            writable: r.writable,
        }
    }
}

/// One worker's way of waiting.
pub enum Waiter {
    /// [`blocking`]: the receive call itself waits.
    Blocking(blocking::Blocking),
    /// [`epoll`](super::epoll): readiness from a per-worker epoll instance.
    Epoll(Epoll),
    /// [`spin`]: never waits.
    Spin(spin::Spin),
}

impl Waiter {
    /// Sets `socket` up for `mode` (blocking or not, timeouts, epoll
    /// registration); an idle worker wakes every `idle` to check for
    /// shutdown.
    pub fn new(mode: IoMode, socket: &UdpSocket, idle: Duration) -> io::Result<Waiter> {
        let idle_ms = idle.as_millis().clamp(1, i32::MAX as u128) as i32;
        Ok(match mode {
            IoMode::Blocking => Waiter::Blocking(blocking::Blocking::new(socket, idle)?),
            IoMode::Epoll => {
                socket.set_nonblocking(true)?;
                Waiter::Epoll(Epoll::new(socket.as_raw_fd(), true)?.with_idle(idle_ms))
            }
            IoMode::Spin => {
                socket.set_nonblocking(true)?;
                Waiter::Spin(spin::Spin)
            }
            // Never asked: the io_uring backend (`super::uring`) waits for
            // its own completions. Its socket is non-blocking like spin's.
            IoMode::Uring => {
                socket.set_nonblocking(true)?;
                Waiter::Spin(spin::Spin)
            }
        })
    }

    /// Waits as the model says; `held` while the send backlog holds echoes.
    pub fn wait(&mut self, fd: RawFd, held: Option<Held>) -> io::Result<Waited> {
        match self {
            Waiter::Blocking(b) => b.wait(fd, held),
            Waiter::Epoll(e) => e.wait_for_work(held),
            Waiter::Spin(s) => Ok(s.wait()),
        }
    }

    /// True when an empty receive (`EAGAIN`) means the receive call itself
    /// waited a whole idle period (blocking mode's `SO_RCVTIMEO`).
    pub fn receive_waits(&self) -> bool {
        matches!(self, Waiter::Blocking(_))
    }
}
