//! The worker's round with `--io uring`: completions from the multishot
//! receive go through the same `dispatch` and send backlog as the other
//! models.

use std::io::{Error, Result};
use std::time::Duration;

use super::{Worker, IDLE_WAKE};
/// `--io uring` (`io::uring`): the same round as [`Worker::poll_once`],
/// with the kernel receiving into the pool's buffers ahead of the worker.
impl Worker {
    /// One round: send what the backlog holds, post free buffers to the
    /// kernel (re-arming the receive), wait for completions, dispatch up
    /// to `--batch` received datagrams, send.
    pub(super) fn poll_once_uring(&mut self) -> Result<()> {
        if !self.backlog.is_empty() {
            self.flush_backlog();
        }
        let held = self.held();
        let Some(u) = self.uring.as_mut() else {
            return Ok(());
        };
        u.refill(&mut self.pool);
        let (timeout_ms, want_writable) = held.map_or((IDLE_WAKE.as_millis() as i32, false), |h| {
            (h.timeout_ms, h.want_writable)
        });
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let waited = u
            .wait(timeout, want_writable)
            .map_err(|e| Error::new(e.kind(), format!("worker {}: {e}", self.id)))?;
        let mut work = std::mem::take(&mut self.work);
        let cap = work.capacity().max(1);
        let done = u.complete(&mut self.pool, &mut work, cap, &mut self.rx.kernel_drops);
        if done.writable {
            self.backlog.mark_writable();
        }
        if done.received > 0 && waited.slept {
            self.counters.wakeups += 1;
        }
        for slot in work.drain(..) {
            self.dispatch(slot);
        }
        self.work = work;
        if let Some(e) = done.error {
            self.recv_failed(e)?;
        }
        if done.received > 0 {
            self.flush_backlog();
            self.tick(false);
        } else if !waited.ready {
            self.tick(timeout >= IDLE_WAKE);
        }
        Ok(())
    }

    /// At shutdown: cancel the receive and dispatch the datagrams the
    /// kernel placed before it ended (bounded), so none is left unaccounted
    /// and no request still uses a buffer.
    pub(super) fn finish_uring(&mut self) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        u.cancel();
        for _ in 0..50 {
            let Some(u) = self.uring.as_mut() else {
                return;
            };
            if u.idle() {
                break;
            }
            if u.wait(Duration::from_millis(20), false).is_err() {
                break;
            }
            let mut work = std::mem::take(&mut self.work);
            let cap = work.capacity().max(1);
            u.complete(&mut self.pool, &mut work, cap, &mut self.rx.kernel_drops);
            for slot in work.drain(..) {
                self.dispatch(slot);
            }
            self.work = work;
            self.flush_backlog();
        }
    }
}
