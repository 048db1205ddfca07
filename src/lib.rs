//! udp-packet-pool: a multi-threaded UDP echo server built around per-worker
//! freelist pools of pre-allocated packet buffers, plus the client and load
//! generator that measure it.
//!
//! The path of a datagram is: [`socket`] (bound sockets) -> [`worker`]
//! (batched receive into [`packet::PacketPool`] buffers via [`io`]) ->
//! [`process`] (per-packet verdict: echo or a named drop) -> [`backlog`]
//! (batched echo; what the socket refuses stays held) -> buffers back to
//! the pool. Latency samples go to [`metrics`] over a bounded channel;
//! [`server`] wires it together.
//!
//! All `unsafe` lives in [`io`], the one module that talks to the OS.
#![deny(unsafe_code)]

pub mod backlog;
pub mod capture;
pub mod client;
pub mod clients;
pub mod counters;
pub mod crypto;
pub mod export;
pub mod guard;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod packet;
pub mod pool;
pub mod process;
pub mod report;
pub mod samples;
pub mod server;
pub mod service;
pub mod socket;
pub mod stderr;
pub mod udp_mem;
pub mod wire;
pub mod worker;

// The wire formats under their old paths too.
pub use wire::{probe, sockperf};
