//! Spin I/O model: never waits. Every round tries a non-blocking receive
//! and lets the send backlog try again: the lowest latency, at the price of
//! one core per worker at 100%.

use super::waiter::{Waited, Wake};
use super::RecvWait;

/// The spin model (no state).
pub struct Spin;

impl Spin {
    /// Receive now, without waiting; the backlog may always try again.
    pub fn wait(&mut self) -> Waited {
        Waited {
            wake: Wake::Receive {
                wait: RecvWait::DontWait,
                woken: false,
            },
            writable: true,
        }
    }
}
