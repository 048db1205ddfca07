//! The relay's counters, per direction, and the exit summary (text on
//! stderr, one JSON object on stdout with `--json`).

use std::fmt::Write as _;

use serde::Serialize;

/// What happened to the datagrams of one direction.
///
/// Every datagram received is forwarded or dropped exactly once, and a
/// duplicate adds one forwarded copy, so
/// `forwarded = received - dropped_loss - dropped_rate - dropped_no_slot
/// - send_errors + duplicated` (see [`DirStats::reconciles`]).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct DirStats {
    /// Datagrams read from the socket.
    pub received: u64,
    /// Datagrams (copies included) handed to the kernel for sending.
    pub forwarded: u64,
    /// Dropped by `--loss`.
    pub dropped_loss: u64,
    /// Dropped by the `--rate` token bucket.
    pub dropped_rate: u64,
    /// Dropped because the client table was full (client to server only).
    pub dropped_no_slot: u64,
    /// Copies the kernel refused to send.
    pub send_errors: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
    /// Datagrams held back and sent after the next one.
    pub reordered: u64,
    /// Datagrams with one byte flipped.
    pub corrupted: u64,
    /// Datagrams held for a non-zero time by `--delay-ms`/`--jitter-ms`.
    pub delayed: u64,
}

impl DirStats {
    pub fn reconciles(&self) -> bool {
        self.received + self.duplicated
            == self.forwarded
                + self.dropped_loss
                + self.dropped_rate
                + self.dropped_no_slot
                + self.send_errors
    }
}

/// The exit summary.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub listen: String,
    pub upstream: String,
    pub seed: u64,
    /// Clients that got a relay socket.
    pub clients: u64,
    /// Distinct client addresses turned away because the table was full.
    pub clients_refused: u64,
    pub client_to_server: DirStats,
    pub server_to_client: DirStats,
    /// Both directions' counters reconcile.
    pub reconciled: bool,
    pub duration_s: f64,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "impair: {} -> {} (seed {}), {:.1} s, {} clients ({} refused)",
            self.listen,
            self.upstream,
            self.seed,
            self.duration_s,
            self.clients,
            self.clients_refused
        );
        for (name, d) in [
            ("client->server", &self.client_to_server),
            ("server->client", &self.server_to_client),
        ] {
            let _ = writeln!(
                s,
                "  {name}: received {} forwarded {} | dropped loss {} rate {} no_slot {} send_err {} | duplicated {} reordered {} corrupted {} delayed {}",
                d.received,
                d.forwarded,
                d.dropped_loss,
                d.dropped_rate,
                d.dropped_no_slot,
                d.send_errors,
                d.duplicated,
                d.reordered,
                d.corrupted,
                d.delayed
            );
        }
        let _ = writeln!(
            s,
            "  counters {}",
            if self.reconciled {
                "reconcile (forwarded = received - drops + duplicates)"
            } else {
                "DO NOT reconcile"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliation() {
        let mut d = DirStats {
            received: 10,
            forwarded: 9,
            dropped_loss: 2,
            duplicated: 1,
            ..DirStats::default()
        };
        assert!(d.reconciles());
        d.forwarded += 1;
        assert!(!d.reconciles());
    }
}
