//! Live progress on stderr, once a second: an in-place indicatif line on a
//! terminal, plain lines otherwise (or with --interval-lines) so that CI logs
//! keep them.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Plain lines when asked for or when stderr is not a terminal.
    pub fn new(plain_lines: bool) -> Progress {
        if plain_lines || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// Shows one progress line.
    pub fn show(&self, line: &str) {
        match &self.bar {
            Some(b) => b.set_message(line.to_string()),
            None => eprintln!("loadgen: {line}"),
        }
    }

    /// Stops the animation and clears its line (the summary follows).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
