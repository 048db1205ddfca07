//! One sending thread: it sends for its flows on schedule and receives
//! their replies, in a single loop:
//!
//! 1. send everything that is due (at most `--batch` per `sendmmsg`, or one
//!    train per `sendmsg` with `--gso` (see `send`), and at most `--batch`
//!    (or a train) per flow per turn, so a thread far behind still gets
//!    round to receiving),
//! 2. sleep until the next packet (train) is due; in pingpong mode, or
//!    when the kernel does not stamp replies on arrival, in `ppoll` on all
//!    its sockets so that a reply ends the sleep (with `--spin`, poll
//!    without sleeping),
//! 3. take the replies that are queued (`recvmmsg`, `MSG_DONTWAIT`, a few
//!    calls per socket per turn; with `--gro` a read may be a coalesced
//!    train, cut into its datagrams by its segment size), validate and
//!    account them, and go to 1.
//!
//! Receiving never waits, so it cannot hold up pacing by more than a few
//! bounded `recvmmsg` calls. A reply's receive time is the kernel's arrival
//! stamp (`SO_TIMESTAMPNS`, converted to the monotonic clock at the read),
//! so in rate mode the thread need not wake for every reply: at 200k
//! replies/s those wake-ups cost more CPU than all the sending. Without
//! stamps (the kernel refused) the wake-up on arrival keeps receive times
//! honest instead, and the time of the read is used.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use udp_packet_pool::io::{now_monotonic_ns, now_realtime_ns};

use crate::cli::{Mode, Protocol};
use crate::codec::{Codec, Invalid, Probe};
use crate::config::Config;
use crate::flow::Flow;
use crate::schedule::Schedule;
use crate::seal::Sealer;
use crate::sys::{self, RecvBatch, SendBatch};
use crate::tally::{Tally, ThreadResult};
use crate::tick::Tick;
use crate::train::segments;

mod pingpong;
mod rate;
mod send;
mod stamp;

use pingpong::released;
use stamp::StampSender;

/// `recvmmsg` calls per readable socket before going back to sending.
const RECV_CALLS_PER_TURN: usize = 4;
/// Datagrams per `recvmmsg` call (at least `--batch`).
const MIN_RECV_BATCH: usize = 64;
/// Most segments the kernel coalesces into one read (UDP_GRO_CNT_MAX).
const MAX_GRO_SEGMENTS: usize = 64;
/// Most bytes of one coalesced read.
const MAX_GRO_BYTES: usize = 65_535;
/// Per-thread rate up to which sleeps are timed precisely (see [`timer_slack_ns`]).
const PRECISE_TIMERS_UP_TO_PPS: u64 = 15_000;
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
    /// `--psk-file`: seals requests, opens replies.
    sealer: Option<Sealer>,
    /// `--protocol stamp`: what each flow sent, to match replies.
    stamp: Option<StampSender>,
    sched: Schedule,
    flows: Vec<Flow>,
    tally: Tally,
    send: SendBatch,
    send_buf: Vec<u8>,
    due: Vec<Due>,
    offsets: Vec<usize>,
    recv: RecvBatch,
    parsed: Vec<Result<Probe, Invalid>>,
    /// Packets per train (1: none); the schedule's trains.
    train: u32,
    /// Whether trains leave as UDP_SEGMENT sends (false after a refusal).
    gso_on: bool,
    gso_fallback: Option<String>,
    gro_fallback: Option<String>,
    /// Rate mode with kernel receive stamps: sleep through replies.
    lazy_receive: bool,
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
    // A thread wakes once per train.
    let per_thread = spec.cfg.rate.map_or(0, |r| {
        r / u64::from(spec.cfg.shard.count)
            / u64::from(spec.cfg.threads)
            / u64::from(spec.cfg.train.max(1))
    });
    let slack = timer_slack_ns(per_thread);
    let mut w = Worker::new(spec);
    // Best effort: without it pacing is merely coarser.
    let _ = sys::set_timer_slack_ns(slack);
    let r = w.run_loop();
    if r.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    w.final_tick();
    r.map(|()| {
        let mut result = w.tally.finish();
        result.cpu_ns = sys::thread_cpu_ns();
        result.gso_fallback = w.gso_fallback.take();
        result.gro_fallback = w.gro_fallback.take();
        result.stamp.forward_lost = w.stamp.as_ref().map_or(0, StampSender::forward_lost);
        result
    })
}

/// How late the kernel may end the thread's sleeps (`per_thread_pps`: its
/// wake-ups a second, one per train). Its default, 50 us, adds
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
        let codec = match cfg.psk {
            Some(_) => Codec::sealed(cfg.protocol, cfg.size),
            None => Codec::new(cfg.protocol, cfg.size),
        };
        let sealer = cfg.psk.as_ref().map(|s| Sealer::new(s, spec.thread));
        let send_room = cfg.batch.max(cfg.train as usize);
        let mut flows = spec.flows;
        for f in &mut flows {
            // Pingpong: flow f starts at the slot of packet f.
            f.ready_ns = spec.sched.intended_ns(u64::from(f.id));
        }
        let mut gso_on = cfg.train > 1;
        let mut gso_fallback = None;
        if gso_on {
            if let Err(e) = flows
                .first()
                .map_or(Ok(()), |f| sys::probe_gso(f.as_raw_fd()))
            {
                gso_fallback = Some(Worker::gso_probe_failed(&e));
                gso_on = false;
            }
        }
        let gro_error = if cfg.gro {
            flows
                .iter()
                .find_map(|f| sys::set_gro(f.as_raw_fd(), true).err())
        } else {
            None
        };
        let gro = cfg.gro && gro_error.is_none();
        if gro_error.is_some() {
            // All or none: a read is cut up only when every socket does GRO.
            for f in &flows {
                let _ = sys::set_gro(f.as_raw_fd(), false);
            }
        }
        let gro_fallback = gro_error.map(|e| Worker::gro_refused(&e));
        let lazy_receive = cfg.mode == Mode::Rate && flows.iter().all(|f| f.kernel_stamps);
        let recv_slot = if gro {
            (MAX_GRO_SEGMENTS * (cfg.size + 64)).min(MAX_GRO_BYTES)
        } else {
            cfg.size + 64
        };
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
            sealer,
            stamp: (cfg.protocol == Protocol::Stamp)
                .then(|| StampSender::new(flows.len(), cfg.flows, spec.sched)),
            sched: spec.sched,
            flows,
            tally: Tally::new(spec.sched),
            send: SendBatch::new(cfg.batch, cfg.target),
            send_buf: vec![0; send_room * cfg.size],
            due: Vec::with_capacity(send_room),
            offsets: Vec::with_capacity(send_room),
            // Room for replies a little longer than ours (they fail the
            // checksum); with GRO for a whole coalesced train of them.
            recv: RecvBatch::new(cfg.batch.max(MIN_RECV_BATCH), recv_slot),
            parsed: Vec::with_capacity(MAX_GRO_SEGMENTS),
            train: cfg.train,
            gso_on,
            gso_fallback,
            gro_fallback,
            lazy_receive,
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
            if sending && self.lazy_receive {
                // Replies keep their kernel stamps: take them when it is
                // time to send anyway.
                sys::sleep_ns(timeout)?;
                if sys::poll(&mut self.pollfds, 0)? > 0 {
                    self.receive()?;
                }
            } else if sys::poll(&mut self.pollfds, timeout)? > 0 {
                self.receive()?;
            } else if self.spin {
                std::hint::spin_loop();
            }
        }
    }

    /// When the thread next has something to send (or to time out).
    fn next_due_ns(&self) -> u64 {
        match self.mode {
            Mode::Rate => self.next_train_due_ns(),
            Mode::Pingpong => self.next_pingpong_due_ns(),
        }
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
                let wall = now_realtime_ns();
                let mut parsed = std::mem::take(&mut self.parsed);
                for i in 0..n {
                    let d = self.recv.datagram(i);
                    let (segment, stamp) = self.recv.control(i);
                    // The kernel's arrival time on the monotonic clock: as
                    // long before `now` as the stamp is before `wall`.
                    let arrival = stamp.map_or(now, |s| now.saturating_sub(wall.saturating_sub(s)));
                    parsed.clear();
                    let (codec, f) = (&self.codec, &self.flows[k]);
                    let (stamp_tx, sealer) = (&mut self.stamp, &mut self.sealer);
                    parsed.extend(segments(d.len(), segment).map(|r| {
                        match (&mut *stamp_tx, &mut *sealer) {
                            // T4: the kernel's stamp on the wall clock.
                            (Some(st), _) => {
                                let t4 = stamp.unwrap_or(wall);
                                st.parse(codec, k, f.id, f.next_seq, &d[r], t4)
                            }
                            (None, Some(s)) => s.parse(codec, &d[r]),
                            (None, None) => codec.parse(&d[r]),
                        }
                    }));
                    self.tally.gro_read(parsed.len() as u64, now);
                    for p in parsed.drain(..) {
                        self.account(p, arrival, now);
                    }
                }
                self.parsed = parsed;
                if n < self.recv.capacity() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Counts one received datagram, parsed, that arrived at `arrival` and
    /// was read at `now`.
    fn account(&mut self, parsed: Result<Probe, Invalid>, arrival: u64, now: u64) {
        let p = match parsed {
            Ok(p) => p,
            Err(why) => return self.tally.invalid(why, now),
        };
        let threads = self.threads;
        let ours = p.flow < self.flows_total && p.flow % threads == self.thread as u32;
        let local = (p.flow / threads) as usize;
        if !ours || local >= self.flows.len() || !self.flows[local].was_sent(p.seq) {
            return self.tally.invalid(Invalid::Foreign, now);
        }
        let f = &mut self.flows[local];
        let kind = f.window.record(p.seq);
        self.tally.reply(&p, kind, arrival);
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
