//! The one module that talks to the OS directly. Every `unsafe` block in the
//! crate is under `src/io/`, each with a `// SAFETY:` note; the rest of the
//! crate is `#![deny(unsafe_code)]` (checked in CI by `.ci/check-unsafe`).
//!
//! - [`waiter`]: how a worker waits, over the I/O models side by side:
//!   [`blocking`], [`epoll`] (also readiness in general) and [`spin`].
//! - [`recv_batch`]: the posted receive ring (`recvmmsg` into pool buffers,
//!   control messages: `SO_TIMESTAMPNS`, `SO_RXQ_OVFL`).
//! - [`uring`]: the io_uring backend (`--io uring`): a multishot `recvmsg`
//!   over a provided-buffer ring made of the worker's pool buffers.
//! - [`send_batch`]: one `sendmmsg` call over pool buffers, errors as values.
//! - [`sockopt`]: socket options socket2 lacks, `SO_MEMINFO` drop counter,
//!   the `IP_RECVERR` error queue.
//! - [`reuseport`]: a classic BPF program steering `SO_REUSEPORT` sockets
//!   by source prefix.
//! - [`slab`]: the memory the kernel reads and writes, owned through one
//!   base pointer.
//! - [`addr`], [`clock`]: socket addresses and clocks; [`page_size`].
#![allow(unsafe_code)]

use std::io;

/// Calls a libc function and turns a `-1` result into `io::Error`. The
/// caller states in its own `// SAFETY:` comment why the arguments are valid;
/// the macro's block only forwards them.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: forwarding only; validity of the arguments is the caller's
        // `// SAFETY:` statement at the call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod addr;
pub mod blocking;
pub mod clock;
pub mod epoll;
pub mod recv_batch;
pub mod reuseport;
pub mod send_batch;
pub mod slab;
pub mod sockopt;
pub mod spin;
pub mod uring;
pub mod waiter;

pub use clock::{now_monotonic_ns, now_realtime_ns, process_cpu_ns, thread_voluntary_switches};
pub use epoll::{poll_one, Epoll, Ready};
pub use recv_batch::{recv_discard, RecvBatch, RecvWait};
pub use send_batch::{send_train, SendBatch, SendError, SendFault};
pub use sockopt::{
    drain_error_queue, enable_ip_recverr, enable_pktinfo, enable_recv_ttl, enable_recverr,
    enable_rx_timestamps, enable_rxq_ovfl, enable_udp_gro, force_buffer_size, recv_into,
    socket_drops,
};
pub use waiter::{Held, IoMode, Waited, Waiter, Wake};

/// The kernel's page size in bytes (the unit of `net.ipv4.udp_mem`); 4096
/// if `sysconf` cannot say.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes a plain integer and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The errno of an `io::Error`, or 0.
pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
