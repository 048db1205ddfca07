//! The soak test's verdict: RSS growth, the server's reconciliation, and
//! the loss accounting between loadgen, the relay and the server, plus the
//! summary (text table or JSON).
//!
//! The loss accounting. Every datagram loadgen sent (`sent`, with
//! `--warmup 0` all of them) must reach the server's sockets, or be lost on
//! the way in a place that counted it; every one loadgen counts `lost` must
//! have been dropped somewhere that counted it:
//!
//! ```text
//! direct: sent            = server reached_socket
//! relay:  relay forwarded = server reached_socket   (client to server)
//!         sent            = relay received + relay listen-socket drops
//! lost = server drops (all reasons) + server send errors + server kernel drops
//!      + relay drops and send errors (both directions, minus duplicates)
//!      + relay socket drops + loadgen socket drops + loadgen `late`
//! ```
//!
//! With relay duplicates (`--duplicate`) a copy can replace a lost original,
//! so the right-hand side is then only an upper bound of `lost`.
//! The server's and the relay's counters are exact. The kernel drops of
//! loadgen's and the relay's own sockets are not reported by either tool;
//! soak samples them from `/proc/net/udp` every 100 ms, so they are labelled
//! *sampled*: a drop after the last sample would be missed (and then shows
//! up as unexplained loss, failing the run rather than passing it).

use serde::Serialize;
use serde_json::Value;

/// Counts of the run, from the three reports and the socket samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// loadgen `sent`.
    pub sent: u64,
    /// loadgen `received` (unique valid echoes).
    pub echoed: u64,
    /// loadgen `lost`.
    pub lost: u64,
    /// loadgen `late` (arrived, but too old for its window: counted lost).
    pub late: u64,
    /// Server `reached_socket`.
    pub reached_socket: u64,
    /// Server drops summed over every reason.
    pub server_drops: u64,
    /// Server send errors summed over every kind.
    pub server_send_errors: u64,
    /// Server `kernel_drops`.
    pub server_kernel_drops: u64,
    /// Server `unaccounted`.
    pub unaccounted: i64,
    /// Relay client-to-server `received` and `forwarded` (None: direct).
    pub relay_in: Option<(u64, u64)>,
    /// Relay drops (loss, rate, no slot, send errors), both directions.
    pub relay_losses: u64,
    /// Copies the relay added (`--duplicate`), both directions.
    pub relay_duplicated: u64,
    /// Sampled drops of the relay's listening socket.
    pub relay_listen_socket_drops: u64,
    /// Sampled drops of the relay's sockets towards the server.
    pub relay_upstream_socket_drops: u64,
    /// Sampled drops of loadgen's sockets.
    pub loadgen_socket_drops: u64,
}

fn u(v: &Value, key: &str) -> Result<u64, String> {
    v[key]
        .as_u64()
        .ok_or_else(|| format!("report lacks a numeric `{key}`"))
}

fn sum_obj(v: &Value, key: &str) -> Result<u64, String> {
    let obj = v[key]
        .as_object()
        .ok_or_else(|| format!("server report lacks the object `{key}`"))?;
    Ok(obj.values().filter_map(Value::as_u64).sum())
}

impl Counts {
    /// Reads the loadgen and server reports (and the relay's, if any).
    pub fn from_reports(lg: &Value, srv: &Value, relay: Option<&Value>) -> Result<Counts, String> {
        let mut c = Counts {
            sent: u(lg, "sent")?,
            echoed: u(lg, "received")?,
            lost: u(lg, "lost")?,
            late: lg["late"].as_u64().unwrap_or(0),
            reached_socket: u(srv, "reached_socket")?,
            server_drops: sum_obj(srv, "drops")?,
            server_send_errors: sum_obj(srv, "send_errors")?,
            server_kernel_drops: u(srv, "kernel_drops")?,
            unaccounted: srv["unaccounted"]
                .as_i64()
                .ok_or("server report lacks `unaccounted`")?,
            ..Counts::default()
        };
        if let Some(r) = relay {
            let c2s = &r["client_to_server"];
            let s2c = &r["server_to_client"];
            c.relay_in = Some((u(c2s, "received")?, u(c2s, "forwarded")?));
            let mut losses = 0i64;
            for d in [c2s, s2c] {
                for k in [
                    "dropped_loss",
                    "dropped_rate",
                    "dropped_no_slot",
                    "send_errors",
                ] {
                    losses += u(d, k)? as i64;
                }
                losses -= u(d, "duplicated")? as i64;
            }
            c.relay_losses = losses.max(0) as u64;
        }
        Ok(c)
    }

    /// The exactly counted part of the loss (server and relay counters).
    pub fn exact_explained(&self) -> u64 {
        self.server_drops + self.server_send_errors + self.server_kernel_drops + self.relay_losses
    }

    /// The sampled part (socket drops of loadgen and the relay) plus `late`.
    pub fn sampled_explained(&self) -> u64 {
        self.loadgen_socket_drops
            + self.relay_listen_socket_drops
            + self.relay_upstream_socket_drops
            + self.late
    }
}

/// The failed checks, each a sentence naming what failed (empty: ok).
pub fn failures(c: &Counts, rss_growth_kib: i64, max_growth_kib: u64) -> Vec<String> {
    let mut f = Vec::new();
    if rss_growth_kib > max_growth_kib as i64 {
        f.push(format!(
            "RSS grew {rss_growth_kib} KiB from the 2nd-second sample to the last, \
             more than --max-rss-growth-kib {max_growth_kib}"
        ));
    }
    if c.unaccounted != 0 {
        f.push(format!(
            "server report not reconciled: unaccounted = {}",
            c.unaccounted
        ));
    }
    match c.relay_in {
        None if c.sent != c.reached_socket => f.push(format!(
            "unexplained loss on the way in: loadgen sent {} but {} reached the server's sockets",
            c.sent, c.reached_socket
        )),
        Some((_, fwd)) if fwd != c.reached_socket => f.push(format!(
            "unexplained loss on the way in: the relay forwarded {fwd} towards the server \
             but {} reached the server's sockets",
            c.reached_socket
        )),
        Some((rcv, _)) if c.sent != rcv + c.relay_listen_socket_drops => f.push(format!(
            "unexplained loss on the way in: loadgen sent {} but the relay received {rcv} \
             and its socket dropped {} (sampled)",
            c.sent, c.relay_listen_socket_drops
        )),
        _ => {}
    }
    let explained = c.exact_explained() + c.sampled_explained();
    // A copy made by the relay can stand in for a lost original, so with
    // duplicates the explained losses are only an upper bound.
    let bad = if c.relay_duplicated > 0 {
        c.lost > explained
    } else {
        c.lost != explained
    };
    if bad {
        f.push(format!(
            "unexplained loss: loadgen lost {} but {} are accounted for \
             ({} exactly by server/relay counters: server drops {} + send errors {} + \
             kernel drops {} + relay losses {}; {} sampled: loadgen socket drops {} + \
             relay socket drops {} + late {}); difference {}",
            c.lost,
            explained,
            c.exact_explained(),
            c.server_drops,
            c.server_send_errors,
            c.server_kernel_drops,
            c.relay_losses,
            c.sampled_explained(),
            c.loadgen_socket_drops,
            c.relay_listen_socket_drops + c.relay_upstream_socket_drops,
            c.late,
            c.lost as i64 - explained as i64
        ));
    }
    f
}

/// RSS figures over the samples, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    /// The sample taken at the 2nd second (after the warm-up).
    pub first_kib: u64,
    /// The last sample.
    pub last_kib: u64,
    /// The largest sample.
    pub max_kib: u64,
    /// last - first.
    pub growth_kib: i64,
}

impl Rss {
    /// From the per-second samples (the 2nd one is the baseline; the 1st
    /// when there is only one).
    pub fn from_samples(s: &[u64]) -> Rss {
        let first = s.get(1).or(s.first()).copied().unwrap_or(0);
        let last = s.last().copied().unwrap_or(0);
        Rss {
            first_kib: first,
            last_kib: last,
            max_kib: s.iter().copied().max().unwrap_or(0),
            growth_kib: last as i64 - first as i64,
        }
    }
}

/// The summary, printed as a table or as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub rate: u64,
    pub via_impair: bool,
    pub sent: u64,
    pub echoed: u64,
    pub lost: u64,
    pub loss_pct: f64,
    pub loss_explained_exact: u64,
    pub loss_explained_sampled: u64,
    pub rss: Rss,
    pub max_rss_growth_kib: u64,
    pub counts: Counts,
    pub samples: usize,
    pub verdict: &'static str,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

impl Summary {
    /// The text table.
    pub fn table(&self) -> String {
        let rows = [
            ("duration", format!("{:.0} s at {}/s{}", self.duration_s, self.rate,
                if self.via_impair { " via impair" } else { "" })),
            ("sent", self.sent.to_string()),
            ("echoed", self.echoed.to_string()),
            ("loss", format!("{} ({:.4} %): {} exact (server/relay counters), {} sampled (socket drops, late)",
                self.lost, self.loss_pct, self.loss_explained_exact, self.loss_explained_sampled)),
            ("reached server", format!("{} (server kernel drops {}, unaccounted {})",
                self.counts.reached_socket, self.counts.server_kernel_drops, self.counts.unaccounted)),
            ("RSS first KiB", self.rss.first_kib.to_string()),
            ("RSS last KiB", self.rss.last_kib.to_string()),
            ("RSS max KiB", self.rss.max_kib.to_string()),
            ("growth KiB", format!("{} (limit {})", self.rss.growth_kib, self.max_rss_growth_kib)),
            ("verdict", self.verdict.to_string()),
        ];
        let mut s = String::from("--- soak summary ---\n");
        for (k, v) in rows {
            s += &format!("{k:<15} {v}\n");
        }
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        for f in &self.failures {
            s += &format!("FAILED: {f}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reports() -> (Value, Value) {
        let lg = json!({"sent": 100, "received": 90, "lost": 10, "late": 0});
        let srv = json!({"reached_socket": 100, "kernel_drops": 4, "unaccounted": 0,
            "drops": {"truncated": 1, "rate_limited": 2}, "send_errors": {"other": 3}});
        (lg, srv)
    }

    #[test]
    fn exact_loss_passes_and_a_missing_one_fails() {
        let (lg, srv) = reports();
        let c = Counts::from_reports(&lg, &srv, None).unwrap();
        assert_eq!(c.exact_explained(), 10);
        assert!(failures(&c, 0, 1024).is_empty());
        let lg = json!({"sent": 100, "received": 89, "lost": 11});
        let c = Counts::from_reports(&lg, &srv, None).unwrap();
        let f = failures(&c, 0, 1024);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("unexplained loss") && f[0].contains("difference 1"),
            "{f:?}"
        );
    }

    #[test]
    fn relay_losses_count_both_directions() {
        let lg = json!({"sent": 100, "received": 80, "lost": 20});
        let srv = json!({"reached_socket": 90, "kernel_drops": 0, "unaccounted": 0,
            "drops": {}, "send_errors": {}});
        let d = |r: u64, f: u64, l: u64| {
            json!({"received": r, "forwarded": f, "dropped_loss": l,
            "dropped_rate": 0, "dropped_no_slot": 0, "send_errors": 0, "duplicated": 0})
        };
        let relay = json!({"client_to_server": d(100, 90, 10), "server_to_client": d(90, 80, 10)});
        let c = Counts::from_reports(&lg, &srv, Some(&relay)).unwrap();
        assert_eq!(c.relay_losses, 20);
        assert!(failures(&c, 0, 1024).is_empty());
        let srv2 = json!({"reached_socket": 89, "kernel_drops": 0, "unaccounted": 0,
            "drops": {}, "send_errors": {}});
        let c = Counts::from_reports(&lg, &srv2, Some(&relay)).unwrap();
        assert!(failures(&c, 0, 1024)[0].contains("relay forwarded 90"));
    }

    #[test]
    fn rss_growth_and_unaccounted_fail() {
        let (lg, mut srv) = reports();
        srv["unaccounted"] = json!(2);
        let c = Counts::from_reports(&lg, &srv, None).unwrap();
        let f = failures(&c, 2000, 1024);
        assert!(f[0].contains("RSS grew 2000 KiB"));
        assert!(f[1].contains("unaccounted = 2"));
        let r = Rss::from_samples(&[100, 200, 150, 260]);
        assert_eq!(
            (r.first_kib, r.last_kib, r.max_kib, r.growth_kib),
            (200, 260, 260, 60)
        );
        assert_eq!(Rss::from_samples(&[7]).growth_kib, 0);
    }
}
