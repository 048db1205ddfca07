//! Client tracking (`--clients`, `--client-ttl`) and the framed broadcast
//! (`--admin`).
//!
//! ```text
//! worker i: ClientTrack stage (after the loop and destination guards)
//!             -> ClientTable (fixed, set-associative, per worker): packets,
//!                bytes, first/last seen, answered (from the final verdict)
//!             -> every 100 ms: try_lock copy into the ClientDirectory
//!           Broadcast stage (before FramedReply, --protocol framed)
//!             -> admin's 0x03 frame: the 0x83 frame + the live answered
//!                clients of every worker (the directory) into its FanOut;
//!                the worker sends them through its send backlog
//! metrics thread: ClientDirectory::summary (merged by address): the
//!   "clients N" of the statistics line, the top talkers of the report
//! ```
//!
//! Memory is fixed at start (see [`bytes_needed`]); nothing here allocates
//! per datagram.

mod broadcast;
mod directory;
mod fanout;
mod stage;
mod table;

use std::time::Duration;

use ipnet::IpNet;

pub use broadcast::Broadcast;
pub use directory::{ClientDirectory, ClientsSummary, TopTalker, TOP_TALKERS};
pub use fanout::{FanOut, FanOutCounters};
pub use stage::ClientTrack;
pub use table::{ClientStats, ClientTable};

/// Default `--clients`: table entries per worker.
pub const DEFAULT_CLIENTS: usize = 4096;
/// Default `--client-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Client tracking and broadcast settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientsConfig {
    /// Table entries per worker (`--clients`); 0 turns tracking off.
    pub size: usize,
    /// A client not seen for this long is forgotten (`--client-ttl`).
    pub ttl: Duration,
    /// Answer framed broadcasts from these networks (`--admin`) by
    /// relaying them to the clients; empty: every broadcast is refused.
    pub admin: Vec<IpNet>,
    /// Add the broadcast stage (`--protocol framed`).
    pub framed_broadcast: bool,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            size: DEFAULT_CLIENTS,
            ttl: DEFAULT_TTL,
            admin: Vec::new(),
            framed_broadcast: false,
        }
    }
}

/// Bytes client tracking allocates at start for `threads` workers: each
/// worker's table and its published copy, and with the broadcast stage its
/// candidate and target lists (room for every worker's clients).
pub fn bytes_needed(cfg: &ClientsConfig, threads: usize) -> u64 {
    if cfg.size == 0 {
        return 0;
    }
    let entries = ClientTable::capacity_for(cfg.size) as u64;
    let stats = std::mem::size_of::<ClientStats>() as u64;
    let per_worker = entries * stats * 2
        + match cfg.framed_broadcast {
            true => Broadcast::bytes_for(entries * threads as u64),
            false => 0,
        };
    per_worker * threads as u64
}
