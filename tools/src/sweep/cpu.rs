//! CPU measurement: the server's user+system time from `/proc/PID/stat`
//! over one loadgen run at the common rate, divided by the datagrams it
//! echoed in that run (CPU per echo), and the projection of that figure to
//! more cores.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::loadgen_proc::Loadgen;
use crate::output::Row;
use crate::procs::{clock_ticks_per_sec, fail, Error};
use crate::runner::{settle, SHORT_TOLERANCE, SUMMARY_WAIT};
use crate::server_proc::Server;
use crate::Settings;

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`), in clock ticks.
/// Fields are counted after the parenthesised command name, which may
/// itself contain spaces and parentheses.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts with field 3 (state).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_ns(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000_000) / clock_ticks_per_sec()
}

/// User+system CPU time of process `pid` so far, nanoseconds.
pub fn process_cpu_ns(pid: u32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
    let ticks = parse_stat_cpu_ticks(&text)
        .ok_or_else(|| fail(format!("cannot parse utime/stime from {path}")))?;
    Ok(ticks_to_ns(ticks))
}

/// Echoes/s that `cores` cores would sustain at `cpu_ns_per_echo` each:
/// `cores x 1e9 / cpu_ns_per_echo`. A projection, not a measurement: it
/// assumes every core runs a worker as cheaply as measured and ignores
/// memory bandwidth, NIC queues, softirq placement and the sender. None
/// for a figure that is not a positive number.
pub fn projected_rate(cores: u32, cpu_ns_per_echo: f64) -> Option<f64> {
    (cpu_ns_per_echo.is_finite() && cpu_ns_per_echo > 0.0)
        .then(|| f64::from(cores) * 1e9 / cpu_ns_per_echo)
}

/// Measures the server's CPU per echo over one loadgen run at the common
/// rate and fills the row's `cpu_*` fields, its projection and notes.
pub fn measure(
    server: &mut Server,
    settings: &Settings,
    loadgen: &Loadgen,
    row: &mut Row,
    interrupted: &AtomicBool,
) -> Result<(), Error> {
    let rate = settings.common_rate;
    let echoed_before = server.echoed_total(SUMMARY_WAIT);
    let cpu_before = server.cpu_ns()?;
    let r = loadgen.run(server.addr, rate, interrupted)?;
    let cpu_after = server.cpu_ns()?;
    // Workers publish their counters every 50 ms.
    settle(Duration::from_millis(150), interrupted)?;
    let echoed_after = server.echoed_total(SUMMARY_WAIT);
    let (echoed, source) = match (echoed_before, echoed_after) {
        (Some(a), Some(b)) if b > a => (b - a, "server"),
        _ => (r.received.max(0.0) as u64, "loadgen"),
    };
    let cpu_ns = cpu_after.saturating_sub(cpu_before);
    let ticks = cpu_ns * clock_ticks_per_sec() / 1_000_000_000;
    row.cpu_ticks = Some(ticks);
    row.cpu_echoed = Some(echoed);
    row.cpu_echo_source = Some(source.into());
    row.cpu_loss_pct = Some(r.loss_pct);
    if echoed > 0 {
        row.cpu_ns_per_pkt = Some(cpu_ns as f64 / echoed as f64);
    }
    row.projected_cores = settings.project_cores;
    row.projected_rate = row
        .cpu_ns_per_pkt
        .and_then(|ns| projected_rate(settings.project_cores, ns));
    eprintln!(
        "  cpu @ {rate}/s: {:.3} s server CPU ({ticks} ticks) / {echoed} echoed ({source} count) = {} ns/echo, loss {:.3}%",
        cpu_ns as f64 / 1e9,
        row.cpu_ns_per_pkt.map_or("-".into(), |x| format!("{x:.0}")),
        r.loss_pct
    );
    if !r.loss_pct.is_finite() || r.loss_pct > settings.max_loss_pct {
        row.add_note(format!(
            "CPU run at {rate}/s was lossy ({:.2}%)",
            r.loss_pct
        ));
    }
    if r.send_rate < rate as f64 * SHORT_TOLERANCE {
        row.add_note(format!(
            "CPU run: loadgen sent {:.0} of {rate}/s",
            r.send_rate
        ));
    }
    if ticks < 10 {
        row.add_note(format!("coarse CPU figure ({ticks} clock ticks)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    37 12 0 0 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(49));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_stat_is_readable() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat_cpu_ticks(&text).is_some());
        assert!(process_cpu_ns(std::process::id()).is_ok());
    }

    #[test]
    fn projection_is_cores_times_1e9_over_ns_per_echo() {
        // 16 cores at 8000 ns per echo: 16 x 125,000/s.
        assert_eq!(projected_rate(16, 8_000.0), Some(2_000_000.0));
        // The README's example: 4 workers at 5000 ns, about 800k/s.
        assert_eq!(projected_rate(4, 5_000.0), Some(800_000.0));
        assert_eq!(projected_rate(1, 1_000.0), Some(1_000_000.0));
        let r = projected_rate(16, 5_620.0).unwrap();
        assert!((r - 2_846_975.08).abs() < 0.01, "{r}");
        // Linear in cores.
        assert_eq!(
            projected_rate(32, 7_000.0).unwrap(),
            2.0 * projected_rate(16, 7_000.0).unwrap()
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(projected_rate(16, bad), None, "{bad}");
        }
    }
}
