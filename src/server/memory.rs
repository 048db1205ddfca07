//! The memory check at start: what a configuration allocates, against
//! what the machine has available (`MemAvailable`), so an impossible one is
//! refused with the figures before anything is allocated (instead of the
//! OOM killer ending it with nothing said).

use std::io;

use super::ServerConfig;
use crate::clients;
use crate::worker::IoMode;

/// Bytes a configuration allocates at start: every worker's pool (slab,
/// metadata, free list, send-backlog queue; with `--io uring` also each
/// buffer's headroom and the buffer ring), the rate table and the client
/// tables. `None`
/// when it does not even fit in a `usize`.
pub fn memory_needed(cfg: &ServerConfig) -> Option<u64> {
    let per_buffer = (cfg.buffer_size() as u64)
        .checked_add(std::mem::size_of::<crate::packet::PacketMeta>() as u64)?
        .checked_add(4 + 8)?; // free-list index, backlog slot
    let uring = match cfg.io {
        IoMode::Uring => {
            crate::io::uring::extra_bytes(cfg.pool_size.min(crate::io::uring::MAX_POOL)) as u64
        }
        _ => 0,
    };
    let pools = (cfg.threads as u64).checked_mul(
        (cfg.pool_size as u64)
            .checked_mul(per_buffer)?
            .checked_add(uring)?,
    )?;
    let table = cfg.guard.rate.map_or(0, |r| {
        (r.table_size.clamp(1, 1 << 30).next_power_of_two() as u64) * 8
    });
    let capture = cfg
        .capture
        .as_ref()
        .map_or(0, |c| c.queue as u64 * cfg.packet_size as u64);
    pools
        .checked_add(table)?
        .checked_add(capture)?
        .checked_add(clients::bytes_needed(&cfg.clients, cfg.threads))
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses, before allocating anything, a configuration that needs more
/// memory than the machine has available (it would be killed by the OOM
/// killer with nothing said).
pub(super) fn check_memory(cfg: &ServerConfig) -> io::Result<Option<String>> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let avail = mem_available();
    let fits = |c: &ServerConfig| match (memory_needed(c), avail) {
        (Some(n), Some(a)) => n <= a,
        (Some(n), None) => n <= usize::MAX as u64 / 2,
        (None, _) => false,
    };
    if fits(cfg) {
        return Ok(None);
    }
    // GRO's 64 KiB buffers are what does not fit: run without GRO.
    let plain = ServerConfig {
        gro: false,
        ..cfg.clone()
    };
    if cfg.gro && fits(&plain) {
        return Ok(Some(format!(
            "GRO's 64 KiB buffers ({:.1} MiB for {} workers x --pool-size {}) do not fit in the {:.1} MiB available (lower --pool-size to keep GRO)",
            mib(memory_needed(cfg).unwrap_or(0)),
            cfg.threads,
            cfg.pool_size,
            mib(avail.unwrap_or(0)),
        )));
    }
    let need = memory_needed(&plain);
    Err(io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "not enough memory: {} workers x --pool-size {} x (--packet-size {} + {} bytes of bookkeeping){}{} need {} but {} available; lower --pool-size, --packet-size or --threads{}",
            cfg.threads,
            cfg.pool_size,
            cfg.packet_size,
            std::mem::size_of::<crate::packet::PacketMeta>() + 12,
            if cfg.guard.rate.is_some() { " + the rate table" } else { "" },
            if cfg.clients.size > 0 { " + the client tables" } else { "" },
            need.map_or("more than this machine can address".to_string(), |n| format!("{:.1} MiB", mib(n))),
            avail.map_or("an unknown amount is".to_string(), |a| format!("only {:.1} MiB are", mib(a))),
            if cfg.clients.size > 0 { " (or --clients)" } else { "" },
        ),
    ))
}
