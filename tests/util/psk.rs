//! Key files for the `--psk-file` tests: a fresh random key written as 64
//! hex digits to a mode-600 file in the temp directory, removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use udp_packet_pool::crypto::Psk;

/// A key and the file that holds it.
pub struct KeyFile {
    pub path: PathBuf,
    pub psk: Psk,
}

impl KeyFile {
    /// A new random key in a mode-600 file.
    pub fn new() -> KeyFile {
        let key: [u8; 32] = std::array::from_fn(|_| getrandom::u32().unwrap() as u8);
        KeyFile::with_text(&format!("{}\n", hex::encode(key)), 0o600)
    }

    /// A file holding `text` with `mode` (for the refusals).
    pub fn with_text(text: &str, mode: u32) -> KeyFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("psk-test-{}-{n}.key", std::process::id()));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let psk = Psk::parse(text.as_bytes()).unwrap_or_else(|_| Psk::from_bytes(&[0; 32]));
        KeyFile { path, psk }
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
