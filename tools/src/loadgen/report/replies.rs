//! The report's lines about replies that did not count (`--protocol
//! framed` and `stamp`): bad replies, error replies, and what to do when
//! the target does not speak the protocol.

use std::fmt;

use super::Report;

impl Report {
    /// Why replies were bad, and what to do about it.
    pub(super) fn bad_reply_warning(&self) -> String {
        let fix = match self.protocol {
            "stamp" => "a STAMP reflector (`server --protocol stamp`), or --protocol echo",
            _ => "`server --protocol framed`, or --protocol echo",
        };
        let echoed_requests = self.echoed_requests;
        if echoed_requests > 0 {
            format!(
                "{} bad replies, {echoed_requests} of them our own {} requests sent back \
                 unchanged: the target echoes byte for byte; use {fix}",
                self.bad_replies, self.protocol
            )
        } else {
            format!(
                "{} bad replies (invalid {} replies, or not matching a request sent)",
                self.bad_replies, self.protocol
            )
        }
    }

    /// The text lines for bad and error replies (only when not zero).
    pub(super) fn write_bad_replies(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
