//! Checks of shipped deployment files (systemd unit, env example,
//! Containerfile) against the binaries: the long flags a text uses and the
//! long flags a binary's `--help` lists.

use std::collections::BTreeSet;
use std::process::Command;

/// The long flags (`--name`) `bin --help` lists.
pub fn help_flags(bin: &str) -> BTreeSet<String> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} --help failed");
    listed_flags(&String::from_utf8_lossy(&out.stdout))
}

/// The flags a `--help` text's option list defines: each entry's long flag
/// and its short one (`  -p, --port <PORT>` gives `--port` and `-p`), not
/// flags of other tools that a description mentions.
pub fn listed_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for l in text.lines() {
        let mut l = l.trim_start();
        if let [b'-', c, b',', b' ', ..] = l.as_bytes() {
            if c.is_ascii_alphanumeric() {
                flags.insert(l[..2].to_string());
                l = &l[4..];
            }
        }
        if l.starts_with("--") {
            let name = l.split_whitespace().next().unwrap_or("");
            flags.extend(flags_in(name).pop_first());
        }
    }
    assert!(
        flags.contains("--help"),
        "the help text lists no --help: {text}"
    );
    flags
}

/// Every `--name` token in `text` (letters, digits and dashes after `--`).
pub fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && !w[2..].starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// Fails with every flag of `used` (found in `what`) that `bin --help` lacks.
pub fn assert_flags_known(bin: &str, used: &BTreeSet<String>, what: &str) {
    let known = help_flags(bin);
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{what} uses {unknown:?}, which {bin} --help does not list (known: {known:?})"
    );
}

/// The `[[bin]]` names in the package's Cargo.toml.
pub fn cargo_bins() -> BTreeSet<String> {
    let toml = read_repo_file("Cargo.toml");
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(v) = line.strip_prefix("name = ").filter(|_| in_bin) {
            bins.insert(v.trim_matches('"').to_string());
        }
    }
    assert!(bins.contains("server"), "no [[bin]] server in Cargo.toml");
    bins
}

/// A file of the repository, by path from its root.
pub fn read_repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}
