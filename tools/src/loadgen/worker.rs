//! One sending thread: it sends for its flows on schedule and receives
//! their replies, in a single loop:
//!
//! 1. send everything that is due (at most `--batch` per `sendmmsg`, and at
//!    most `--batch` per flow per turn, so a thread far behind still gets
//!    round to receiving),
//! 2. sleep in `ppoll` on all its sockets until the next packet is due or a
//!    reply arrives (with `--spin`, poll without sleeping),
//! 3. take the replies that are queued (`recvmmsg`, `MSG_DONTWAIT`, a few
//!    calls per socket per turn), validate and account them, and go to 1.
//!
//! Receiving never waits, so it cannot hold up pacing by more than a few
//! bounded `recvmmsg` calls; the wake-up on arrival keeps receive timestamps
//! honest without a second thread per sender.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use udp_packet_pool::io::now_monotonic_ns;

use crate::cli::Mode;
use crate::codec::Codec;
use crate::config::Config;
use crate::flow::Flow;
use crate::schedule::Schedule;
use crate::sys::{self, RecvBatch, SendBatch};
use crate::tally::{Tally, ThreadResult};
use crate::tick::Tick;

mod pingpong;
mod rate;

use pingpong::released;

/// `recvmmsg` calls per readable socket before going back to sending.
const RECV_CALLS_PER_TURN: usize = 4;
/// Datagrams per `recvmmsg` call (at least `--batch`).
const MIN_RECV_BATCH: usize = 64;
/// Per-thread rate up to which sleeps are timed precisely (see [`timer_slack_ns`]).
const PRECISE_TIMERS_UP_TO_PPS: u64 = 15_000;
/// Retries of a send that met a full buffer (about 1 ms apart) before the
/// datagrams are counted as send errors.
const MAX_SEND_RETRIES: u32 = 1000;
const NS_PER_SEC: u64 = 1_000_000_000;

/// What a thread needs to run.
pub struct WorkerSpec {
    /// Thread number (0-based).
    pub thread: usize,
    /// Its flows: ids `thread`, `thread + threads`, ...
    pub flows: Vec<Flow>,
    /// Run settings.
    pub cfg: Config,
    /// The common schedule.
    pub sched: Schedule,
    /// Where interval reports go.
    pub ticks: Sender<Tick>,
    /// Set on Ctrl+C or when another thread failed: stop sending, drain, end.
    pub stop: Arc<AtomicBool>,
}

/// A packet on its way out.
#[derive(Debug, Clone, Copy)]
struct Due {
    local: usize,
    seq: u64,
    intended_ns: u64,
    sent: bool,
}

struct Worker {
    thread: usize,
    threads: u32,
    flows_total: u32,
    target: SocketAddr,
    mode: Mode,
    spin: bool,
    timeout_ns: u64,
    drain_ns: u64,
    batch: usize,
    codec: Codec,
    sched: Schedule,
    flows: Vec<Flow>,
    tally: Tally,
    send: SendBatch,
    send_buf: Vec<u8>,
    due: Vec<Due>,
    offsets: Vec<usize>,
    recv: RecvBatch,
    pollfds: Vec<libc::pollfd>,
    round: u64,
    pos: usize,
    total: u64,
    ticks: Sender<Tick>,
    tick_index: u64,
    next_tick_ns: u64,
    stop: Arc<AtomicBool>,
}

/// Runs one thread to the end of its drain period.
pub fn run(spec: WorkerSpec) -> io::Result<ThreadResult> {
    let stop = spec.stop.clone();
    // Back to back: sleeps end on replies, not timers; precise is cheap.
    let per_thread = spec.cfg.rate.map_or(0, |r| r / u64::from(spec.cfg.threads));
    let slack = timer_slack_ns(per_thread);
    let mut w = Worker::new(spec);
    // Best effort: without it pacing is merely coarser.
    let _ = sys::set_timer_slack_ns(slack);
    let r = w.run_loop();
    if r.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    w.final_tick();
    r.map(|()| w.tally.finish())
}

/// How late the kernel may end the thread's sleeps. Its default, 50 us, adds
/// up to 50 us of pacing error to every corrected latency: at 2-10k pkt/s
/// per thread a 1 us slack cut the corrected median by 20-50 us on the
/// 2-core loopback machine, for the same CPU. At 20k pkt/s and more, exact
/// wake-ups for every packet cost more CPU than they gain (1 us: 60% CPU,
/// 25 us: 45%, with lower latencies too), and 25 us lets nearby sends share
/// a wake-up.
pub fn timer_slack_ns(per_thread_pps: u64) -> u64 {
    if per_thread_pps <= PRECISE_TIMERS_UP_TO_PPS {
        1_000
    } else {
        25_000
    }
}

impl Worker {
    fn new(spec: WorkerSpec) -> Worker {
        let cfg = &spec.cfg;
        let codec = Codec::new(cfg.protocol, cfg.size);
        let mut flows = spec.flows;
        for f in &mut flows {
            // Pingpong: flow f starts at the slot of packet f.
            f.ready_ns = spec.sched.intended_ns(u64::from(f.id));
        }
        let pollfds = flows
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Worker {
            thread: spec.thread,
            threads: cfg.threads,
            flows_total: cfg.flows,
            target: cfg.target,
            mode: cfg.mode,
            spin: cfg.spin,
            timeout_ns: cfg.timeout_ns,
            drain_ns: cfg.drain_ns,
            batch: cfg.batch,
            codec,
            sched: spec.sched,
            flows,
            tally: Tally::new(spec.sched),
            send: SendBatch::new(cfg.batch, cfg.target),
            send_buf: vec![0; cfg.batch * cfg.size],
            due: Vec::with_capacity(cfg.batch),
            offsets: Vec::with_capacity(cfg.batch),
            // Room for replies a little longer than ours: they fail the checksum.
            recv: RecvBatch::new(cfg.batch.max(MIN_RECV_BATCH), cfg.size + 64),
            pollfds,
            round: 0,
            pos: 0,
            total: spec.sched.total_packets(),
            ticks: spec.ticks,
            tick_index: 1,
            next_tick_ns: spec.sched.measure_start_ns() + NS_PER_SEC,
            stop: spec.stop,
        }
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut sending = true;
        let mut drain_until = u64::MAX;
        loop {
            let now = now_monotonic_ns();
            self.tick(now);
            if sending && self.stop.load(Ordering::Relaxed) {
                sending = false;
                drain_until = now + self.drain_ns;
            }
            if sending {
                let finished = match self.mode {
                    Mode::Rate => self.send_rate_due(now)?,
                    Mode::Pingpong => self.send_pingpong_due(now)?,
                };
                if finished {
                    sending = false;
                    drain_until = now_monotonic_ns() + self.drain_ns;
                }
            }
            let now = now_monotonic_ns();
            if !sending && (self.tally.unanswered == 0 || now >= drain_until) {
                return Ok(());
            }
            let wake = if sending {
                self.next_due_ns()
            } else {
                drain_until
            }
            .min(self.next_tick_ns);
            let timeout = if self.spin {
                0
            } else {
                wake.saturating_sub(now)
            };
            if sys::poll(&mut self.pollfds, timeout)? > 0 {
                self.receive()?;
            } else if self.spin {
                std::hint::spin_loop();
            }
        }
    }

    /// When the thread next has something to send (or to time out).
    fn next_due_ns(&self) -> u64 {
        match self.mode {
            Mode::Rate => {
                let i = self.next_index();
                if i >= self.total {
                    u64::MAX
                } else {
                    self.sched.intended_ns(i)
                }
            }
            Mode::Pingpong => self.next_pingpong_due_ns(),
        }
    }

    /// Builds the datagrams in `self.due` (stamped with one send time) and
    /// sends them, one `sendmmsg` per flow.
    fn transmit(&mut self) -> io::Result<()> {
        let size = self.codec.size();
        self.due.sort_unstable_by_key(|d| (d.local, d.seq));
        let stamp = now_monotonic_ns();
        let back_to_back = self.sched.back_to_back();
        for (j, d) in self.due.iter_mut().enumerate() {
            if back_to_back {
                // No schedule: the packet was meant to go when it goes.
                d.intended_ns = stamp;
            }
            let f = &mut self.flows[d.local];
            self.codec.emit(
                &mut self.send_buf[j * size..(j + 1) * size],
                f.id,
                d.seq,
                d.intended_ns,
                stamp,
            );
            f.next_seq = f.next_seq.max(d.seq + 1);
        }
        let mut start = 0;
        while start < self.due.len() {
            let local = self.due[start].local;
            let end = start
                + self.due[start..]
                    .iter()
                    .take_while(|d| d.local == local)
                    .count();
            self.send_group(start, end, stamp)?;
            start = end;
        }
        Ok(())
    }

    /// Sends `self.due[start..end]` (all of one flow).
    fn send_group(&mut self, start: usize, end: usize, stamp: u64) -> io::Result<()> {
        let size = self.codec.size();
        let fd = self.flows[self.due[start].local].as_raw_fd();
        let mut k = start;
        let mut retries = 0;
        while k < end {
            self.offsets.clear();
            self.offsets.extend((k..end).map(|j| j * size));
            match self.send.send(fd, &self.send_buf, &self.offsets, size) {
                Ok(m) if m > 0 => {
                    for d in &mut self.due[k..k + m] {
                        d.sent = true;
                        self.tally.sent(d.intended_ns, stamp);
                    }
                    k += m;
                    retries = 0;
                }
                Ok(_) => {
                    // Nothing taken and no error: count it, never loop forever.
                    self.tally.send_failed();
                    k += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    // An earlier datagram met ICMP port unreachable; the
                    // error is now cleared and this one was not sent: retry.
                    self.tally.refused(now_monotonic_ns());
                    retries += 1;
                    if retries > MAX_SEND_RETRIES {
                        for _ in k..end {
                            self.tally.send_failed();
                        }
                        return Ok(());
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    retries += 1;
                    if retries > MAX_SEND_RETRIES {
                        for _ in k..end {
                            self.tally.send_failed();
                        }
                        return Ok(());
                    }
                    self.tally.send_retried();
                    wait_writable(fd)?;
                }
                Err(e) => {
                    if !self.tally.ever_sent {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot send to {}: {e}", self.target),
                        ));
                    }
                    self.tally.send_failed();
                    k += 1;
                }
            }
        }
        Ok(())
    }

    /// Takes the queued replies of every readable socket.
    fn receive(&mut self) -> io::Result<()> {
        for k in 0..self.pollfds.len() {
            let revents = self.pollfds[k].revents;
            if revents == 0 {
                continue;
            }
            let fd = self.pollfds[k].fd;
            for _ in 0..RECV_CALLS_PER_TURN {
                let n = match self.recv.recv(fd) {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        // ICMP port unreachable for an earlier datagram.
                        self.tally.refused(now_monotonic_ns());
                        continue;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("receive failed on flow {}: {e}", self.flows[k].id),
                        ))
                    }
                };
                if n == 0 {
                    break;
                }
                let now = now_monotonic_ns();
                for i in 0..n {
                    self.account(i, now);
                }
                if n < self.recv.capacity() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Validates and counts datagram `i` of the last receive.
    fn account(&mut self, i: usize, now: u64) {
        let p = match self.codec.parse(self.recv.datagram(i)) {
            Ok(p) => p,
            Err(why) => return self.tally.invalid(why, now),
        };
        let threads = self.threads;
        let ours = p.flow < self.flows_total && p.flow % threads == self.thread as u32;
        let local = (p.flow / threads) as usize;
        if !ours || local >= self.flows.len() || !self.flows[local].was_sent(p.seq) {
            return self.tally.invalid(crate::codec::Invalid::Foreign, now);
        }
        let f = &mut self.flows[local];
        let arrival = f.window.record(p.seq);
        self.tally.reply(&p, arrival, now);
        if f.outstanding.is_some_and(|o| o.seq == p.seq) {
            released(&self.sched, &mut self.tally, f, now);
        }
    }

    /// Reports every interval that ended by `now`.
    fn tick(&mut self, now: u64) {
        while now >= self.next_tick_ns {
            let end_ns = self.next_tick_ns;
            self.report(end_ns, false);
            self.next_tick_ns += NS_PER_SEC;
        }
    }

    /// Reports the last, partial interval.
    fn final_tick(&mut self) {
        self.report(now_monotonic_ns(), true);
    }

    fn report(&mut self, end_ns: u64, last: bool) {
        let (counters, latency) = self.tally.take_interval();
        // The collector may be gone if the run is being torn down.
        let _ = self.ticks.send(Tick {
            thread: self.thread,
            index: self.tick_index,
            end_ns,
            counters,
            latency,
            last,
        });
        self.tick_index += 1;
    }
}

/// Waits (up to 1 ms) for room in `fd`'s send buffer.
fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    sys::poll(&mut p, 1_000_000).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_is_fine_at_low_rates_and_coarser_at_high_rates() {
        assert_eq!(timer_slack_ns(2_000), 1_000);
        assert_eq!(timer_slack_ns(15_000), 1_000);
        assert_eq!(timer_slack_ns(200_000), 25_000);
    }
}
