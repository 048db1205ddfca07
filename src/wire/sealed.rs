//! Sealed datagrams (`--psk-file`): ChaCha20-Poly1305 (RFC 8439) under a
//! pre-shared key, with a header that says which way the datagram goes.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+---------------+---------------+
//! |  magic 0xE5   |  magic 0xA1   |  version = 1  | reserved = 0  |  0
//! +---------------+---------------+---------------+---------------+
//! |D|            sender id (31 bits)                              |  4  ┐
//! +---------------+---------------+---------------+---------------+     │ 96-bit
//! |                 counter (u64, big-endian)                     |  8  │ nonce
//! |                                                               |     ┘
//! +---------------+---------------+---------------+---------------+
//! |                 ciphertext (as long as the plaintext) ...       16
//! +---------------+---------------+---------------+---------------+
//! |                 Poly1305 tag (16 bytes)                       |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! * The whole 16-byte header is the associated data: changing any bit of
//!   it, of the ciphertext or of the tag fails the tag check.
//! * The nonce is bytes 4..16. Its top bit `D` is the direction: 0 for a
//!   request (client, loadgen), 1 for a reply (server). Requests and
//!   replies therefore never share a nonce, and a reply can never be
//!   taken for a request (the server drops it as `sealed_reply`: no
//!   reflection, no loops between two servers).
//! * The sender id is random per sender and run (each client run, each
//!   loadgen flow, each server worker); the counter starts at a random
//!   value below 2^62 and goes up by one per datagram, so a nonce is never
//!   used twice by one sender, and two senders' nonces overlap only if they
//!   drew the same 31-bit id *and* overlapping counter ranges.
//! * Overhead: [`OVERHEAD`] = 32 bytes; a reply is exactly as long as its
//!   request (the server re-seals the same plaintext under its own nonce).

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};

use super::{u32_at, u64_at};

/// Header length in bytes (the associated data).
pub const HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The two magic bytes.
pub const MAGIC: [u8; 2] = [0xE5, 0xA1];
/// The only version.
pub const VERSION: u8 = 1;
/// The direction bit of the sender id word: set on replies.
pub const REPLY_BIT: u32 = 1 << 31;

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const RESERVED: usize = 3;
    pub const SENDER: Range<usize> = 4..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const NONCE: Range<usize> = 4..16;
}

/// Which way a sealed datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server: answered.
    Request,
    /// Server to client: never answered.
    Reply,
}

/// Why bytes are not a well-formed sealed datagram (before any tag check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than header and tag.
    Truncated,
    /// Not our magic, or another version, or a non-zero reserved byte.
    Foreign,
}

/// A sealed datagram over any byte buffer; [`Packet::new_checked`]
/// validates the length and header once, so the accessors cannot panic.
/// The tag is checked by [`open_in_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it (accessors panic on one shorter
    /// than [`OVERHEAD`]).
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds header and tag, with our magic, version 1
    /// and a zero reserved byte.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < OVERHEAD {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC || b[field::VERSION] != VERSION || b[field::RESERVED] != 0 {
            return Err(Error::Foreign);
        }
        Ok(Packet::new_unchecked(buffer))
    }

    /// The header (the associated data).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// Request or reply (the nonce's top bit).
    pub fn direction(&self) -> Direction {
        if self.sender_word() & REPLY_BIT != 0 {
            Direction::Reply
        } else {
            Direction::Request
        }
    }

    fn sender_word(&self) -> u32 {
        u32_at(self.buffer.as_ref(), field::SENDER)
    }

    /// The sender id (31 bits, direction bit cleared).
    pub fn sender(&self) -> u32 {
        self.sender_word() & !REPLY_BIT
    }

    /// The nonce counter.
    pub fn counter(&self) -> u64 {
        u64_at(self.buffer.as_ref(), field::COUNTER)
    }

    /// The 12-byte nonce.
    pub fn nonce(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NONCE]
    }

    /// The ciphertext (the plaintext's length).
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..b.len() - TAG_LEN]
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - TAG_LEN..]
    }
}

/// A nonce source: a random sender id and a counter (see the module doc).
#[derive(Debug, Clone)]
pub struct NonceSeq {
    /// Sender id with the direction bit.
    word: u32,
    next: u64,
}

impl NonceSeq {
    /// A fresh random sender of `direction` (ids and counter start from the
    /// operating system's random source).
    pub fn random(direction: Direction) -> std::io::Result<NonceSeq> {
        let random = |e: getrandom::Error| std::io::Error::other(format!("no random numbers: {e}"));
        let id = getrandom::u32().map_err(random)?;
        let start = getrandom::u64().map_err(random)? >> 2;
        Ok(NonceSeq::new(direction, id, start))
    }

    /// A sender with this id (top bit ignored) whose first counter is `start`.
    pub fn new(direction: Direction, id: u32, start: u64) -> NonceSeq {
        let d = match direction {
            Direction::Request => 0,
            Direction::Reply => REPLY_BIT,
        };
        NonceSeq {
            word: (id & !REPLY_BIT) | d,
            next: start,
        }
    }

    /// The same start with sender id `id + k` (so `k` senders made from one
    /// random base never share an id).
    pub fn for_worker(&self, k: u32) -> NonceSeq {
        NonceSeq {
            word: (self.word & REPLY_BIT) | (self.word.wrapping_add(k) & !REPLY_BIT),
            next: self.next,
        }
    }

    /// The sender id (31 bits).
    pub fn sender(&self) -> u32 {
        self.word & !REPLY_BIT
    }

    /// Writes the next header into `header` (exactly [`HEADER_LEN`] bytes)
    /// and returns the counter used.
    fn next_header(&mut self, header: &mut [u8]) -> u64 {
        let c = self.next;
        // 2^62 datagrams from a random start below 2^62 never wrap.
        self.next = self.next.wrapping_add(1);
        header[field::MAGIC].copy_from_slice(&MAGIC);
        header[field::VERSION] = VERSION;
        header[field::RESERVED] = 0;
        header[field::SENDER].copy_from_slice(&self.word.to_be_bytes());
        header[field::COUNTER].copy_from_slice(&c.to_be_bytes());
        c
    }
}

/// Seals in place: `buf` holds the plaintext at `HEADER_LEN..len -
/// TAG_LEN`; header and tag are written around it. Returns the counter
/// used. `buf` must be at least [`OVERHEAD`] long.
pub fn seal_in_place(cipher: &ChaCha20Poly1305, nonces: &mut NonceSeq, buf: &mut [u8]) -> u64 {
    let n = buf.len();
    let (header, rest) = buf.split_at_mut(HEADER_LEN);
    let counter = nonces.next_header(header);
    let (text, tag) = rest.split_at_mut(n - OVERHEAD);
    // Cannot fail: the plaintext is far below ChaCha20's 256 GiB limit.
    let t = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&header[field::NONCE]), header, text)
        .unwrap_or_default();
    tag.copy_from_slice(&t);
    counter
}

/// Seals `plaintext` into a new datagram.
pub fn seal(cipher: &ChaCha20Poly1305, nonces: &mut NonceSeq, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = vec![0; plaintext.len() + OVERHEAD];
    buf[HEADER_LEN..HEADER_LEN + plaintext.len()].copy_from_slice(plaintext);
    seal_in_place(cipher, nonces, &mut buf);
    buf
}

/// Opens a checked packet in place: on success the plaintext is at
/// `HEADER_LEN..len - TAG_LEN` of `buf`; on a failed tag `buf` holds
/// garbage (decrypted bytes are never used) and `false` is returned.
pub fn open_in_place(cipher: &ChaCha20Poly1305, buf: &mut [u8]) -> bool {
    if buf.len() < OVERHEAD {
        return false;
    }
    let n = buf.len();
    let (header, rest) = buf.split_at_mut(HEADER_LEN);
    let (text, tag) = rest.split_at_mut(n - OVERHEAD);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&header[field::NONCE]),
            header,
            text,
            Tag::from_slice(tag),
        )
        .is_ok()
}

/// Opens a reply in place: true (plaintext at `HEADER_LEN..len - TAG_LEN`)
/// for a well-formed, reply-direction datagram whose tag verifies.
pub fn open_reply_in_place(cipher: &ChaCha20Poly1305, buf: &mut [u8]) -> bool {
    Packet::new_checked(&*buf).is_ok_and(|p| p.direction() == Direction::Reply)
        && open_in_place(cipher, buf)
}

/// The plaintext of a reply that [`open_reply_in_place`] opens, or `None`.
pub fn open_reply(cipher: &ChaCha20Poly1305, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut buf = datagram.to_vec();
    open_reply_in_place(cipher, &mut buf).then(|| buf[HEADER_LEN..buf.len() - TAG_LEN].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::KeyInit;

    /// RFC 8439 section 2.8.2: the AEAD_CHACHA20_POLY1305 test vector.
    #[test]
    fn rfc8439_aead_vector() {
        let key: Vec<u8> = (0x80..=0x9f).collect();
        let nonce = hex::decode("070000004041424344454647").unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
        let cipher = ChaCha20Poly1305::new_from_slice(&key).unwrap();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut text)
            .unwrap();
        assert_eq!(
            hex::encode(&text),
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
             3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
             92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
             3ff4def08e4b7a9de576d26586cec64b6116"
        );
        assert_eq!(hex::encode(tag), "1ae10b594f09e26a7e902ecbd0600691");
    }

    fn cipher() -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new_from_slice(&[7; 32]).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_layout() {
        let c = cipher();
        let mut n = NonceSeq::new(Direction::Request, 0xFFFF_FFFF, 41);
        let d = seal(&c, &mut n, b"hello");
        assert_eq!(d.len(), 5 + OVERHEAD);
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.direction(), Direction::Request);
        assert_eq!((p.sender(), p.counter()), (0x7FFF_FFFF, 41));
        assert_ne!(p.ciphertext(), b"hello", "encrypted");
        let mut open = d.clone();
        assert!(open_in_place(&c, &mut open));
        assert_eq!(&open[HEADER_LEN..HEADER_LEN + 5], b"hello");
        assert_eq!(open_reply(&c, &d), None, "a request is not a reply");
        let mut r = NonceSeq::new(Direction::Reply, 3, 0);
        let reply = seal(&c, &mut r, b"hello");
        assert_eq!(open_reply(&c, &reply).unwrap(), b"hello");
        let second = seal(&c, &mut r, b"hello");
        assert_ne!(second, reply, "a fresh nonce per datagram");
        assert_eq!(Packet::new_checked(&second[..]).unwrap().counter(), 1);
    }

    #[test]
    fn every_flipped_bit_fails_and_bad_headers_are_foreign() {
        let c = cipher();
        let d = seal(&c, &mut NonceSeq::new(Direction::Request, 1, 0), b"abc");
        for bit in 0..d.len() * 8 {
            let mut f = d.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let opened = Packet::new_checked(&f[..]).is_ok() && open_in_place(&c, &mut f);
            assert!(!opened, "bit {bit}");
        }
        let other = ChaCha20Poly1305::new_from_slice(&[8; 32]).unwrap();
        assert!(!open_in_place(&other, &mut d.clone()), "wrong key");
        assert_eq!(
            Packet::new_checked(&d[..OVERHEAD - 1]),
            Err(Error::Truncated)
        );
        for i in 0..4 {
            let mut f = d.clone();
            f[i] ^= 0x10;
            assert_eq!(Packet::new_checked(&f[..]), Err(Error::Foreign), "byte {i}");
        }
        assert!(!open_in_place(&c, &mut [0u8; 31]));
    }
}
