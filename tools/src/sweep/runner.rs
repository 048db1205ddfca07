//! Runs one configuration: a fresh server, the bounded search for its
//! highest clean rate (`search.rs`), the CPU measurement at the common rate
//! (`cpu.rs`), and the server stopped; everything found goes into its
//! [`Row`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Gro;
use crate::cpu;
use crate::loadgen_proc::Loadgen;
use crate::matrix::Config;
use crate::output::Row;
use crate::procs::Error;
use crate::search::{self, Outcome, Stop};
use crate::server_proc::{parse_gro, Server};
use crate::Settings;

/// A probe is generator-limited when loadgen sent less than this fraction
/// of the asked rate.
pub const SHORT_TOLERANCE: f64 = 0.95;
/// Pause after each loadgen run so queues drain before the next one.
pub const SETTLE: Duration = Duration::from_millis(200);
/// Longest wait for the server's `listening on` line.
pub const SERVER_START: Duration = Duration::from_secs(10);
/// Longest wait for the server to exit after SIGINT before it is killed.
pub const SERVER_STOP: Duration = Duration::from_secs(5);
/// Longest wait for the server's SIGHUP summary.
pub const SUMMARY_WAIT: Duration = Duration::from_secs(2);

/// Sleeps `d`, returning early with `Interrupted` on Ctrl+C.
pub fn settle(d: Duration, interrupted: &AtomicBool) -> Result<(), Error> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
    Ok(())
}

fn fmt_us(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

/// Runs one configuration: server up, search, CPU measurement, server down.
pub fn run_config(
    cfg: &Config,
    settings: &Settings,
    loadgen: &Loadgen,
    row: &mut Row,
    interrupted: &AtomicBool,
) -> Result<(), Error> {
    let mut server = Server::start(
        &settings.server,
        &cfg.server_args(),
        SERVER_START,
        interrupted,
    )?;
    row.server_line = Some(server.listening.clone());
    let asked = cfg.gro == Gro::On;
    match parse_gro(&server.listening) {
        Some(on) => {
            row.server_gro = Some(if on { "on" } else { "off" }.into());
            if on != asked {
                row.add_note(format!(
                    "asked GRO {} but the server runs with GRO {}",
                    cfg.gro.name(),
                    if on { "on" } else { "off" }
                ));
            }
        }
        None => row.add_note("the server's listening line does not say whether GRO is on"),
    }
    let addr = server.addr;

    // 1. The search.
    let p = settings.search;
    let mut n = 0;
    let result = search::search(&p, |rate| {
        n += 1;
        let r = loadgen.run(addr, rate, interrupted)?;
        let o = Outcome {
            rate,
            send_rate: r.send_rate,
            echo_rate: r.echo_rate,
            loss_pct: r.loss_pct,
            p50_us: r.latency_us.p50,
            p99_us: r.latency_us.p99,
        };
        eprintln!(
            "  probe {n}/{}: asked {rate}/s, sent {:.0}/s{}, loss {:.3}% ({}), p50 {} us, p99 {} us",
            p.budget,
            o.send_rate,
            if o.is_short(SHORT_TOLERANCE) {
                " (generator short)"
            } else {
                ""
            },
            o.loss_pct,
            if o.is_clean(p.max_loss_pct) {
                "clean"
            } else {
                "lossy"
            },
            fmt_us(o.p50_us),
            fmt_us(o.p99_us)
        );
        settle(SETTLE, interrupted)?;
        Ok(o)
    })?;
    if let Some(b) = &result.best {
        row.max_clean_rate = Some(b.effective_rate(SHORT_TOLERANCE));
        row.asked_rate = Some(b.rate);
        row.send_rate_at_max = Some(b.send_rate);
        row.p50_us = b.p50_us;
        row.p99_us = b.p99_us;
        row.loss_at_max_pct = Some(b.loss_pct);
    }
    if let Some(l) = &result.lowest_lossy {
        row.lowest_lossy_rate = Some(l.rate);
        row.lowest_lossy_loss_pct = Some(l.loss_pct);
    }
    row.stop = Some(result.stop);
    row.resolution = result.resolution;
    row.generator_limited = result.stop == Stop::GeneratorLimited;
    match result.stop {
        Stop::CappedAtMax => row.add_note("clean at --max-rate: raise it to find the limit"),
        Stop::GeneratorLimited => {
            if let Some(b) = &result.best {
                row.add_note(format!(
                    "generator-limited: loadgen sent {:.0} of {}/s",
                    b.send_rate, b.rate
                ));
            }
        }
        Stop::NoCleanRate => {
            let loss = result
                .lowest_lossy
                .as_ref()
                .map_or(f64::NAN, |o| o.loss_pct);
            row.add_note(format!("lossy even at --min-rate ({loss:.2}% loss)"));
        }
        Stop::Budget => row.add_note(format!(
            "probe budget ran out (bracket {})",
            result
                .resolution
                .map_or("open".into(), |r| format!("{:.0}%", r * 100.0))
        )),
        Stop::Resolved => {}
    }
    // A lossy probe where loadgen fell short only matters if what it did
    // send was not clearly above the clean rate found: then the loss may be
    // the generator's rather than the server's.
    row.short_probes = result
        .probes
        .iter()
        .filter(|o| o.is_short(SHORT_TOLERANCE))
        .count();
    if result.stop != Stop::GeneratorLimited {
        let clean = row.max_clean_rate.unwrap_or(0.0);
        let suspect = result
            .probes
            .iter()
            .find(|o| o.is_short(SHORT_TOLERANCE) && o.send_rate <= clean * (1.0 + p.resolution));
        if let Some(s) = suspect {
            row.add_note(format!(
                "loadgen fell short at {}/s (sent {:.0}/s): that loss may be the generator's",
                s.rate, s.send_rate
            ));
        }
    }
    row.probes = result.probes;

    // 2. CPU time per echo at the common rate.
    cpu::measure(&mut server, settings, loadgen, row, interrupted)?;

    // 3. Stop the server.
    let stopped = server.stop(SERVER_STOP);
    match stopped.status {
        None => row.add_note(format!(
            "server ignored SIGINT for {} s and was killed",
            SERVER_STOP.as_secs()
        )),
        Some(st) if !st.success() => {
            row.add_note(format!("server exited with {st}: {}", stopped.stderr_tail))
        }
        Some(_) => {}
    }
    if let Some(rep) = &stopped.report {
        if rep.get("buffers_returned") == Some(&serde_json::Value::Bool(false)) {
            row.add_note("server did not return every pool buffer");
        }
    }
    Ok(())
}
