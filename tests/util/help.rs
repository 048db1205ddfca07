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
    let text = String::from_utf8_lossy(&out.stdout);
    // Only the option list's own entries ("  -p, --port <PORT>", "      --json"),
    // not flags of other tools that a description mentions.
    let flags: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = match l.as_bytes() {
                [b'-', c, b',', b' ', ..] if c.is_ascii_alphanumeric() => &l[4..],
                _ => l,
            };
            l.starts_with("--")
                .then(|| flags_in(l.split_whitespace().next()?).pop_first())?
        })
        .collect();
    assert!(
        flags.contains("--help"),
        "{bin} --help lists no --help: {text}"
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
