//! One load test from sockets to report: opens the flows (each its own
//! source port), fixes the common schedule, starts one thread per
//! `--threads` with its share of the flows, collects their one-second ticks
//! on this thread (progress, `.hlog`), then merges the threads' counters and
//! histograms (`Histogram::add`) into the report.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use udp_packet_pool::io::now_monotonic_ns;

use crate::cli::Protocol;
use crate::collector::Collector;
use crate::config::Config;
use crate::counters::Counters;
use crate::flow::Flow;
use crate::hgrm;
use crate::hlog::HlogWriter;
use crate::latency::{new_histogram, Percentiles};
use crate::progress::Progress;
use crate::report::{Report, RunShape, SendSide, BEHIND_LIMIT_US};
use crate::schedule::Schedule;
use crate::stamp_stats::StampStats;
use crate::tally::ThreadResult;
use crate::worker::{self, WorkerSpec};

/// Time between setting up and packet 0: threads are running by then.
const START_DELAY_NS: u64 = 20_000_000;

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Runs the load test described by `cfg` and prints its report.
pub fn run(cfg: Config) -> io::Result<()> {
    let mut flows = Vec::with_capacity(cfg.flows as usize);
    for id in 0..cfg.flows {
        let f = Flow::open(id, cfg.target).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                " (too many open files: raise `ulimit -n` or use fewer --flows)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("cannot open the UDP socket of flow {id}: {e}{hint}"),
            )
        })?;
        flows.push(f);
    }
    // Fail before sending anything if the outputs cannot be written.
    if let Some(p) = &cfg.hgrm {
        File::create(p).map_err(context(format!("--hgrm {}", p.display())))?;
    }
    let now = now_monotonic_ns();
    let sched = Schedule {
        start_ns: now + start_ahead_ns(SystemTime::now(), cfg.start_at),
        rate: cfg.rate,
        flows: cfg.flows,
        train: cfg.train,
        warmup_ns: cfg.warmup_ns,
        duration_ns: cfg.duration_ns,
        shard: cfg.shard,
    };
    let measure_wall = SystemTime::now() + Duration::from_nanos(sched.measure_start_ns() - now);
    let mut hlog = match &cfg.hlog {
        Some(p) => Some(HlogWriter::create(p, measure_wall)?),
        None => None,
    };

    // First Ctrl+C: stop sending, drain, report. Second: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        flag::register_conditional_shutdown(sig, 130, interrupted.clone())?;
        flag::register(sig, interrupted.clone())?;
        flag::register(sig, stop.clone())?;
    }

    for n in train_notes(&cfg) {
        eprintln!("loadgen: note: {n}");
    }
    let progress = Progress::new(cfg.interval_lines);
    let pace = match (cfg.rate, cfg.shard) {
        (Some(r), s) if s.is_shared() => format!("shard {}/{} of {r} pkt/s", s.index, s.count),
        (Some(r), _) => format!("{r} pkt/s"),
        (None, _) => "back to back".to_string(),
    };
    progress.show(&format!(
        "{pace} to {}: {:.1} s warm-up, {:.1} s measured",
        cfg.target,
        cfg.warmup_ns as f64 / 1e9,
        cfg.duration_ns as f64 / 1e9,
    ));

    wait_for_start(&sched, &stop)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut shares: Vec<Vec<Flow>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    for f in flows {
        shares[(f.id % cfg.threads) as usize].push(f);
    }
    let mut handles = Vec::with_capacity(shares.len());
    for (t, flows) in shares.into_iter().enumerate() {
        let spec = WorkerSpec {
            thread: t,
            flows,
            cfg: cfg.clone(),
            sched,
            ticks: tx.clone(),
            stop: stop.clone(),
        };
        let spawned = thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || worker::run(spec));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    let _ = h.join();
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot start a thread: {e}"),
                ));
            }
        }
    }
    drop(tx);
    let hlog_error = Collector::new(
        cfg.threads as usize,
        sched.measure_start_ns(),
        &progress,
        hlog.as_mut(),
    )
    .run(&rx);

    let mut results: Vec<ThreadResult> = Vec::with_capacity(handles.len());
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(io::Error::other("a sending thread panicked"));
            }
        }
    }
    progress.finish();
    if let Some(e) = failure {
        return Err(e);
    }

    let (report, corrected) = merge(&cfg, &sched, &results, interrupted.load(Ordering::Relaxed));
    let not_replies: u64 = results.iter().map(|r| r.counters.not_replies).sum();
    for w in report.warnings(not_replies) {
        eprintln!("loadgen: warning: {w}");
    }
    let mut out = io::stdout().lock();
    if cfg.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    out.flush()?;

    if let Some(p) = &cfg.hgrm {
        hgrm::write_file(p, &corrected)?;
    }
    if let Some(w) = hlog {
        w.finish()?;
    }
    if let Some(e) = hlog_error {
        return Err(e);
    }
    if report.no_server() {
        // Not a measurement of a server: a run-time failure (exit 1).
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "no server at {} (ICMP port unreachable): nothing answered",
                cfg.target
            ),
        ))
    } else {
        Ok(())
    }
}

/// How long after `now` packet 0 is due: [`START_DELAY_NS`], or with
/// `--start-at` as far ahead as `at` is on the wall clock (never sooner).
fn start_ahead_ns(now: SystemTime, at: Option<SystemTime>) -> u64 {
    at.map_or(START_DELAY_NS, |at| {
        let ahead = at.duration_since(now).unwrap_or_default();
        (ahead.as_nanos() as u64).max(START_DELAY_NS)
    })
}

/// With `--start-at`: sleeps until the threads are due to start, a tenth
/// of a second at a time so that Ctrl+C is seen.
fn wait_for_start(sched: &Schedule, stop: &AtomicBool) -> io::Result<()> {
    loop {
        let left = sched
            .start_ns
            .saturating_sub(now_monotonic_ns() + START_DELAY_NS);
        if left == 0 {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted before --start-at: nothing was sent",
            ));
        }
        thread::sleep(Duration::from_nanos(left.min(100_000_000)));
    }
}

/// Adds up the threads' results: the report and the corrected histogram.
fn merge(
    cfg: &Config,
    sched: &Schedule,
    results: &[ThreadResult],
    interrupted: bool,
) -> (Report, Histogram<u64>) {
    let mut counters = Counters::default();
    let mut corrected = new_histogram();
    let mut uncorrected = new_histogram();
    let mut lateness = new_histogram();
    let mut behind_max_ns = 0;
    let mut last_send_ns = 0;
    for r in results {
        counters += r.counters;
        // Same bounds everywhere: adding cannot fail.
        let _ = corrected.add(&r.corrected);
        let _ = uncorrected.add(&r.uncorrected);
        let _ = lateness.add(&r.lateness);
        behind_max_ns = behind_max_ns.max(r.behind_max_ns);
        last_send_ns = last_send_ns.max(r.last_send_ns);
    }
    let gro_fallback = results.iter().find_map(|r| r.gro_fallback.clone());
    let send_side = SendSide {
        behind_max_us: behind_max_ns as f64 / 1000.0,
        lateness_us: Percentiles::of(&lateness),
        gso: cfg.gso_asked.map(|_| cfg.train),
        gso_fallback: results.iter().find_map(|r| r.gso_fallback.clone()),
        train_sends: counters.train_sends,
        train_datagrams: counters.train_datagrams,
        gro: cfg.gro && gro_fallback.is_none(),
        gro_fallback,
        gro_reads: counters.gro_reads,
        gro_datagrams: counters.gro_datagrams,
        thread_cpu_s: results.iter().map(|r| r.cpu_ns as f64 / 1e9).collect(),
    };
    // The asked duration, or the real span if the last send came later
    // (a sender that fell behind), or what ran before an interruption.
    let span_ns = last_send_ns.saturating_sub(sched.measure_start_ns());
    let duration_ns = if interrupted {
        span_ns
    } else {
        span_ns.max(cfg.duration_ns)
    };
    let report = Report::new(
        RunShape {
            target: cfg.target.to_string(),
            target_arg: cfg.target_arg.clone(),
            rate: cfg.rate,
            shard: cfg.shard,
            mode: cfg.mode,
            protocol: cfg.protocol,
            flows: cfg.flows,
            threads: cfg.threads,
            size: cfg.size,
            warmup_s: cfg.warmup_ns as f64 / 1e9,
        },
        &counters,
        Percentiles::of(&corrected),
        Percentiles::of(&uncorrected),
        duration_ns as f64 / 1e9,
        send_side,
        interrupted,
    );
    let mut report = report;
    if cfg.protocol == Protocol::Stamp {
        let mut stamp = StampStats::default();
        for r in results {
            stamp.add(&r.stamp);
        }
        report.stamp = Some(stamp.report(cfg.stamp_stateful, counters.lost()));
    }
    (report, corrected)
}

/// What the user should know before a run with `--gso`: that the train was
/// cut to fit in one send, and that a train's first member waits for its
/// last one ((N-1)/rate), when that alone is over the 1 ms at which the
/// run counts as behind its schedule.
fn train_notes(cfg: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(asked) = cfg.gso_asked else {
        return notes;
    };
    if cfg.train < asked {
        notes.push(format!(
            "--gso {asked}: {} datagrams of {} bytes fit in one send (64 KiB): trains of {}",
            cfg.train, cfg.size, cfg.train
        ));
    }
    if let Some(rate) = cfg.rate {
        let wait_us = f64::from(cfg.train - 1) * 1e6 / rate as f64;
        if wait_us > BEHIND_LIMIT_US {
            notes.push(format!(
                "--gso {} at {rate} pkt/s: the first datagram of a train waits {:.3} ms for \
                 the last (a train leaves when its last member is due), so the run will \
                 count as behind its schedule; use a shorter train",
                cfg.train,
                wait_us / 1000.0
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_at_maps_the_wall_clock_to_the_schedule() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(start_ahead_ns(now, None), START_DELAY_NS);
        let at = now + Duration::from_millis(2_500);
        assert_eq!(start_ahead_ns(now, Some(at)), 2_500_000_000);
        // Already (nearly) due by the time the run starts: as soon as it can.
        assert_eq!(
            start_ahead_ns(now, Some(now - Duration::from_secs(1))),
            START_DELAY_NS
        );
    }
}
