//! Encrypted echo (`--psk-file`): the pre-shared key, the replay windows
//! and the server's sealed-echo stage. The wire format is in
//! [`crate::wire::sealed`].
//!
//! - [`Psk`]: reads and checks the key file (64 hex digits, i.e. 32 bytes,
//!   an optional trailing newline, readable by its owner only) and holds
//!   the ChaCha20-Poly1305 key.
//! - [`replay`]: per-sender sliding windows of 1024 counters in a table of
//!   fixed size shared by all workers.
//! - [`stage`]: the `SealedEcho` pipeline stage.

pub mod replay;
pub mod stage;

use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

pub use replay::{ReplayTable, DEFAULT_SENDERS, WINDOW};
pub use stage::{SealedEcho, SealedEchoFactory};

/// Key length in bytes (written as twice as many hex digits).
pub const KEY_LEN: usize = 32;

/// How to make a good key file, for error messages.
pub const KEY_HOWTO: &str = "head -c32 /dev/urandom | xxd -p -c64 > FILE; chmod 600 FILE";

/// A pre-shared ChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct Psk {
    key: [u8; KEY_LEN],
    cipher: ChaCha20Poly1305,
}

impl PartialEq for Psk {
    fn eq(&self, other: &Psk) -> bool {
        self.key == other.key
    }
}

impl Eq for Psk {}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Why a key file was refused; the message names the file and the fix.
#[derive(Debug)]
pub struct KeyFileError {
    path: PathBuf,
    what: String,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fix = KEY_HOWTO.replace("FILE", &self.path.display().to_string());
        write!(
            f,
            "--psk-file {}: {}; a key file holds 64 hex digits (32 bytes) and an optional \
             newline, readable by its owner only: {fix}",
            self.path.display(),
            self.what
        )
    }
}

impl std::error::Error for KeyFileError {}

impl Psk {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: &[u8; KEY_LEN]) -> Psk {
        Psk {
            key: *key,
            cipher: ChaCha20Poly1305::new(key.into()),
        }
    }

    /// Reads the key file at `path`. Refused: a file that cannot be read,
    /// one readable or writable by group or others (like OpenSSH's private
    /// keys), and anything but 64 hex digits with an optional `\n` or
    /// `\r\n` after them.
    pub fn from_file(path: &Path) -> Result<Psk, KeyFileError> {
        let err = |what: String| KeyFileError {
            path: path.to_path_buf(),
            what,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(err("not a regular file".to_string()));
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "its mode {mode:03o} lets group or others read or change the key \
                 (run chmod 600 {})",
                path.display()
            )));
        }
        // Read at most a little more than a key: a huge file is refused
        // without being loaded.
        let text =
            read_prefix(path, 2 * KEY_LEN + 3).map_err(|e| err(format!("cannot read it: {e}")))?;
        Psk::parse(&text).map_err(err)
    }

    /// Parses the key file's contents.
    pub fn parse(text: &[u8]) -> Result<Psk, String> {
        let digits = text
            .strip_suffix(b"\r\n")
            .or_else(|| text.strip_suffix(b"\n"))
            .unwrap_or(text);
        if digits.len() != 2 * KEY_LEN {
            return Err(format!(
                "it holds {} characters{}, not 64 hex digits",
                digits.len().min(2 * KEY_LEN + 1),
                if digits.len() > 2 * KEY_LEN {
                    " or more"
                } else {
                    ""
                }
            ));
        }
        let mut key = [0u8; KEY_LEN];
        hex::decode_to_slice(digits, &mut key)
            .map_err(|e| format!("it is not 64 hex digits ({e})"))?;
        Ok(Psk::from_bytes(&key))
    }

    /// The AEAD.
    pub fn cipher(&self) -> &ChaCha20Poly1305 {
        &self.cipher
    }
}

/// The first `max` bytes of the file at `path`.
fn read_prefix(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(max);
    std::fs::File::open(path)?
        .take(max as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_with_optional_newline() {
        assert!(Psk::parse(KEY.as_bytes()).is_ok());
        assert!(Psk::parse(format!("{KEY}\n").as_bytes()).is_ok());
        assert!(Psk::parse(format!("{KEY}\r\n").as_bytes()).is_ok());
        assert!(Psk::parse(KEY.to_uppercase().as_bytes()).is_ok());
        let short = Psk::parse(&KEY.as_bytes()[..62]).unwrap_err();
        assert!(short.contains("62 characters"), "{short}");
        let long = Psk::parse(format!("{KEY}00").as_bytes()).unwrap_err();
        assert!(long.contains("or more"), "{long}");
        let bad = Psk::parse(KEY.replace('0', "g").as_bytes()).unwrap_err();
        assert!(bad.contains("not 64 hex digits"), "{bad}");
        assert!(Psk::parse(format!("{KEY}\n\n").as_bytes()).is_err());
        assert!(Psk::parse(&[0u8; 32]).is_err(), "raw bytes are refused");
    }

    #[test]
    fn key_file_checks_name_the_path_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("psk-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Psk::from_file(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Psk::from_file(&path).is_ok());
        std::fs::write(&path, "short\n").unwrap();
        let e = Psk::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("5 characters") && e.contains("xxd -p -c64"),
            "{e}"
        );
        let e = Psk::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
