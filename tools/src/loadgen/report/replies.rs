//! The report's replies that did not count (`--protocol framed` and
//! `stamp`; flattened into the JSON object): bad replies, error replies,
//! and what to do when the target does not speak the protocol.

use std::fmt;

use serde::Serialize;

use crate::counters::Counters;

/// Replies that were not valid answers to our requests.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Replies {
    /// Datagrams that are not valid replies to our requests.
    pub bad_replies: u64,
    /// The part of `bad_replies` that were our own requests sent back unchanged.
    pub echoed_requests: u64,
    /// `framed`: error replies (type 0xFF).
    pub error_replies: u64,
}

impl Replies {
    /// The counts of a run.
    pub fn of(c: &Counters) -> Replies {
        Replies {
            bad_replies: c.bad_replies,
            echoed_requests: c.echoed_requests,
            error_replies: c.error_replies,
        }
    }

    /// Warnings of a `protocol` run: why replies were bad or errors, and
    /// what to do about it.
    pub fn warnings(&self, protocol: &str) -> Vec<String> {
        let mut w = Vec::new();
        let fix = match protocol {
            "stamp" => "a STAMP reflector (`server --protocol stamp`), or --protocol echo",
            _ => "`server --protocol framed`, or --protocol echo",
        };
        let (bad, echoed) = (self.bad_replies, self.echoed_requests);
        if echoed > 0 {
            w.push(format!(
                "{bad} bad replies, {echoed} of them our own {protocol} requests sent back \
                 unchanged: the target echoes byte for byte; use {fix}"
            ));
        } else if bad > 0 {
            w.push(format!(
                "{bad} bad replies (invalid {protocol} replies, or not matching a request sent)"
            ));
        }
        if self.error_replies > 0 {
            w.push(format!(
                "{} framed error replies (type 0xFF): the server could not serve the requests",
                self.error_replies
            ));
        }
        w
    }

    /// The text lines (only when not zero).
    pub fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bad_replies > 0 {
            writeln!(
                f,
                "  Bad replies:        {} ({} our own requests sent back)",
                self.bad_replies, self.echoed_requests
            )?;
        }
        if self.error_replies > 0 {
            writeln!(f, "  Error replies:      {}", self.error_replies)?;
        }
        Ok(())
    }
}
