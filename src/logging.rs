//! The `-v` stage: logs sender, length and a short hex/ASCII preview of each
//! datagram, at most `per_sec` lines a second so logging can never stall a
//! worker; what it skips is counted and said in the next line.

use std::fmt::Write;

use crate::packet::PacketBuffer;
use crate::process::{Stage, Verdict};

/// Bytes shown in a preview.
const PREVIEW: usize = 16;

/// Rate-limited packet logger (a [`Stage`] that always passes).
#[derive(Debug)]
pub struct PacketLog {
    worker: usize,
    per_sec: u32,
    window_start_ns: u64,
    used: u32,
    suppressed: u64,
}

impl PacketLog {
    /// Logs at most `per_sec` packets a second for worker `worker`.
    pub fn new(worker: usize, per_sec: u32) -> PacketLog {
        PacketLog {
            worker,
            per_sec,
            window_start_ns: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Lines skipped so far in the current window.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// `68 65 6c 6c 6f  |hello|` for the first bytes of `data`.
pub fn preview(data: &[u8]) -> String {
    let shown = &data[..data.len().min(PREVIEW)];
    let mut s = String::with_capacity(PREVIEW * 4 + 4);
    for b in shown {
        let _ = write!(s, "{b:02x} ");
    }
    s.push_str(" |");
    s.extend(shown.iter().map(|&b| {
        if b.is_ascii_graphic() || b == b' ' {
            b as char
        } else {
            '.'
        }
    }));
    s.push('|');
    if data.len() > PREVIEW {
        s.push_str("...");
    }
    s
}

impl Stage for PacketLog {
    fn process(&mut self, pkt: &mut PacketBuffer<'_>) -> Verdict {
        let now = pkt.meta.rx_ns;
        if now.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now;
            self.used = 0;
        }
        if self.used >= self.per_sec {
            self.suppressed += 1;
            return Verdict::Echo;
        }
        self.used += 1;
        let skipped = std::mem::take(&mut self.suppressed);
        let note = if skipped > 0 {
            format!(" ({skipped} packets not logged: rate limit)")
        } else {
            String::new()
        };
        log::info!(
            "worker {} from {} len {}: {}{}",
            self.worker,
            pkt.meta.peer,
            pkt.meta.len,
            preview(pkt.payload()),
            note
        );
        Verdict::Echo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketPool;

    #[test]
    fn preview_shows_hex_and_ascii() {
        assert_eq!(preview(b"hi\n"), "68 69 0a  |hi.|");
        assert!(preview(&[0u8; 40]).ends_with("|..."));
    }

    #[test]
    fn rate_limit_counts_what_it_skips() {
        let mut pool = PacketPool::new(1, 32);
        let s = pool.alloc().unwrap();
        let mut log = PacketLog::new(0, 3);
        {
            let mut b = pool.buffer(&s);
            b.meta.rx_ns = 5_000_000_000;
            for _ in 0..10 {
                assert_eq!(log.process(&mut b), Verdict::Echo);
            }
            assert_eq!(log.suppressed(), 7);
            b.meta.rx_ns += 1_000_000_000; // next second: logs again, resets the count
            log.process(&mut b);
            assert_eq!(log.suppressed(), 0);
        }
        pool.free(s);
    }
}
