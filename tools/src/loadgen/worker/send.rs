//! The way out of a sending thread: stamps the due packets with one send
//! time, then sends each flow's run of them. With `--gso` a run is cut at
//! the schedule's train boundaries and each train (two datagrams or more)
//! leaves in one `sendmsg` with `UDP_SEGMENT`; otherwise, and after the
//! kernel refused a train (EIO, EINVAL, EMSGSIZE, ENOPROTOOPT: a one-line
//! note on stderr, `gso_fallback` in the report), up to `--batch` datagrams
//! per `sendmmsg`. The schedule is the same either way: a train's packets
//! still wait for its last member's time. A full socket buffer is waited
//! for and retried (bounded); refusals of single datagrams are counted.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use udp_packet_pool::io::now_monotonic_ns;

use super::Worker;
use crate::sys;
use crate::train::chunk_len;

/// Retries of a send that met a full buffer (about 1 ms apart) before the
/// datagrams are counted as send errors.
const MAX_SEND_RETRIES: u32 = 1000;

/// Whether the GSO/GRO fallback note was printed (once per process).
static GSO_NOTE: AtomicBool = AtomicBool::new(false);
static GRO_NOTE: AtomicBool = AtomicBool::new(false);

/// Prints `note` on stderr unless `flag` says it was printed already.
pub(super) fn note_once(flag: &AtomicBool, note: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("loadgen: note: {note}");
    }
}

/// Says once that trains are off, and why; returns the reason.
fn gso_note(what: &str, e: &io::Error) -> String {
    let why = format!(
        "the kernel refused UDP GSO ({what}: {e}); sending datagrams one by one with sendmmsg"
    );
    note_once(&GSO_NOTE, &why);
    why
}

/// What one send call did.
enum Sent {
    /// `n` leading datagrams went; `train` if in one UDP_SEGMENT send.
    Some { n: usize, train: bool },
    /// The kernel refused the train: send the same datagrams one by one.
    Refused,
}

impl Worker {
    /// Stops sending trains after the kernel refused one with `e`.
    pub(super) fn gso_refused(&mut self, what: &str, e: &io::Error) {
        let why = gso_note(what, e);
        self.gso_on = false;
        self.gso_fallback.get_or_insert(why);
    }

    /// The kernel does not know `UDP_SEGMENT` at all (the probe at start).
    pub(super) fn gso_probe_failed(e: &io::Error) -> String {
        gso_note("setsockopt UDP_SEGMENT", e)
    }

    /// Receives without GRO after the kernel refused `UDP_GRO` with `e`.
    pub(super) fn gro_refused(e: &io::Error) -> String {
        let why = format!("the kernel refused UDP_GRO ({e}); receiving datagrams one by one");
        note_once(&GRO_NOTE, &why);
        why
    }

    /// Builds the datagrams in `self.due` (stamped with one send time) and
    /// sends them, flow by flow.
    pub(super) fn transmit(&mut self) -> io::Result<()> {
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
            if let Some(s) = &mut self.sealer {
                s.seal(&mut self.send_buf[j * size..(j + 1) * size]);
            }
            f.next_seq = f.next_seq.max(d.seq + 1);
            if let Some(st) = &mut self.stamp {
                st.sent(d.local, d.seq, d.intended_ns, stamp);
            }
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

    /// One send of `self.due[k..end]` (all of one flow, laid out from
    /// datagram `k` of the send buffer): a train if trains are on and the
    /// next one has two members or more, else one `sendmmsg`.
    fn send_some(&mut self, fd: RawFd, k: usize, end: usize) -> io::Result<Sent> {
        let size = self.codec.size();
        let n = chunk_len(self.due[k].seq, end - k, self.train);
        if self.gso_on && n >= 2 {
            let data = &self.send_buf[k * size..(k + n) * size];
            return match sys::send_train(fd, data, size) {
                Ok(_) => Ok(Sent::Some { n, train: true }),
                Err(e) if sys::is_refusal(&e) => {
                    let what = format!("a train of {n} datagrams of {size} bytes");
                    self.gso_refused(&what, &e);
                    Ok(Sent::Refused)
                }
                Err(e) => Err(e),
            };
        }
        // With trains on, a lone member goes alone: the next train may not.
        let stop = if self.gso_on { k + n } else { end };
        self.offsets.clear();
        self.offsets.extend((k..stop).map(|j| j * size));
        let n = self.send.send(fd, &self.send_buf, &self.offsets, size)?;
        Ok(Sent::Some { n, train: false })
    }

    /// Sends `self.due[start..end]` (all of one flow).
    fn send_group(&mut self, start: usize, end: usize, stamp: u64) -> io::Result<()> {
        let fd = self.flows[self.due[start].local].as_raw_fd();
        let mut k = start;
        let mut retries = 0;
        while k < end {
            match self.send_some(fd, k, end) {
                Ok(Sent::Refused) => {}
                Ok(Sent::Some { n: m, train }) if m > 0 => {
                    let mut measured = 0;
                    for d in &mut self.due[k..k + m] {
                        d.sent = true;
                        self.tally.sent(d.intended_ns, stamp);
                        measured += u64::from(self.sched.is_measured(d.intended_ns));
                    }
                    if train {
                        self.tally.train_sent(measured);
                    }
                    k += m;
                    retries = 0;
                }
                Ok(Sent::Some { .. }) => {
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
