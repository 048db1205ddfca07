//! stamp-suite (crates.io `stamp-suite`), the STAMP implementation the
//! interop tests (tests/stamp.rs, tests/loadgen_stamp.rs) measure against:
//! found through `$STAMP_SUITE` or PATH, required when `REQUIRE_STAMP` is
//! set (as in CI), else skipped with a note.

use std::process::Command;

use super::prerequisite;

/// The stamp-suite binary: `$STAMP_SUITE`, else `stamp-suite` on PATH;
/// `None` (a note printed) when it cannot be run, a failure with
/// `REQUIRE_STAMP` set.
pub fn stamp_suite() -> Option<String> {
    let bin = std::env::var("STAMP_SUITE").unwrap_or_else(|_| "stamp-suite".into());
    let found = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    prerequisite(
        found,
        "REQUIRE_STAMP",
        "stamp-suite installed (cargo install stamp-suite)",
    )
    .then_some(bin)
}
