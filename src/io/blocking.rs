//! Blocking I/O model: the receive call itself waits (`recvmmsg` with
//! `MSG_WAITFORONE`, bounded by `SO_RCVTIMEO` so an idle worker still sees
//! the stop flag). While the send backlog holds echoes it waits with
//! `poll` instead, for a datagram, for room to send, or for the backlog's
//! next retry or deadline.

use std::io;
use std::net::UdpSocket;
use std::os::fd::RawFd;
use std::time::Duration;

use super::waiter::{Held, Waited, Wake};
use super::{poll_one, RecvWait};

/// The blocking model's state: the idle period, in ms.
pub struct Blocking {
    idle_ms: i32,
}

impl Blocking {
    /// Puts `socket` in blocking mode with a receive timeout of `idle`.
    pub fn new(socket: &UdpSocket, idle: Duration) -> io::Result<Blocking> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(idle))?;
        Ok(Blocking {
            idle_ms: idle.as_millis().clamp(1, i32::MAX as u128) as i32,
        })
    }

    /// Nothing held: receive and let the call wait. Echoes held: `poll`.
    pub fn wait(&mut self, fd: RawFd, held: Option<Held>) -> io::Result<Waited> {
        let Some(h) = held else {
            return Ok(Waited {
                wake: Wake::Receive {
                    wait: RecvWait::WaitForOne,
                    woken: false,
                },
                writable: false,
            });
        };
        let r = poll_one(fd, h.want_writable, h.timeout_ms)?;
        Ok(Waited::after_ready(r, h.timeout_ms, self.idle_ms))
    }
}
