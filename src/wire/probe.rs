//! The load generator's probe payload.
//!
//! ```text
//! 0..4   magic "UPPL"        4..8   flow id (u32)
//! 8..16  sequence (u64)      16..24 intended send time, ns (u64)
//! 24..32 actual send time, ns (u64)
//! 32..36 checksum (u32, FNV-1a over every other byte of the datagram)
//! 36..   filler derived from the sequence number
//! ```
//! All fields little-endian. Times are `CLOCK_MONOTONIC` nanoseconds of the
//! sending host. The checksum lets a receiver tell a corrupted echo from a
//! foreign datagram (wrong magic).

/// Header length: the smallest valid probe.
pub const HEADER_LEN: usize = 36;
/// "UPPL".
pub const MAGIC: u32 = u32::from_le_bytes(*b"UPPL");

mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const FLOW: Range<usize> = 4..8;
    pub const SEQ: Range<usize> = 8..16;
    pub const INTENDED: Range<usize> = 16..24;
    pub const SENT: Range<usize> = 24..32;
    pub const CHECK: Range<usize> = 32..36;
}

/// Why bytes are not a valid probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than [`HEADER_LEN`].
    Truncated,
    /// Not ours: the magic is wrong.
    Foreign,
    /// Ours, but the checksum does not match.
    Corrupted,
}

/// A probe over any byte buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn read_u32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_le_bytes(b[r].try_into().expect("4 bytes"))
}

fn read_u64(b: &[u8], r: std::ops::Range<usize>) -> u64 {
    u64::from_le_bytes(b[r].try_into().expect("8 bytes"))
}

/// FNV-1a over the datagram, skipping the checksum field.
pub fn checksum(b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, &x) in b.iter().enumerate() {
        if field::CHECK.contains(&i) {
            continue;
        }
        h ^= x as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps without checking.
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Validates length, magic and checksum once.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if read_u32(b, field::MAGIC) != MAGIC {
            return Err(Error::Foreign);
        }
        if read_u32(b, field::CHECK) != checksum(b) {
            return Err(Error::Corrupted);
        }
        Ok(Packet { buffer })
    }

    /// Flow (sender socket) id.
    pub fn flow(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FLOW)
    }

    /// Sequence number within the flow.
    pub fn seq(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SEQ)
    }

    /// Intended send time (ns).
    pub fn intended_ns(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::INTENDED)
    }

    /// Actual send time (ns).
    pub fn sent_ns(&self) -> u64 {
        read_u64(self.buffer.as_ref(), field::SENT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes a complete probe into the whole buffer (which must hold at
    /// least [`HEADER_LEN`] bytes): header, filler and checksum.
    pub fn emit(buffer: T, flow: u32, seq: u64, intended_ns: u64, sent_ns: u64) -> Packet<T> {
        let mut p = Packet { buffer };
        let b = p.buffer.as_mut();
        assert!(
            b.len() >= HEADER_LEN,
            "probe buffer shorter than the header"
        );
        b[field::MAGIC].copy_from_slice(&MAGIC.to_le_bytes());
        b[field::FLOW].copy_from_slice(&flow.to_le_bytes());
        b[field::SEQ].copy_from_slice(&seq.to_le_bytes());
        b[field::INTENDED].copy_from_slice(&intended_ns.to_le_bytes());
        b[field::SENT].copy_from_slice(&sent_ns.to_le_bytes());
        for (i, x) in b[HEADER_LEN..].iter_mut().enumerate() {
            *x = (seq as u8).wrapping_add(i as u8);
        }
        let c = checksum(b);
        b[field::CHECK].copy_from_slice(&c.to_le_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; 64];
        Packet::emit(&mut buf[..], 7, 42, 1000, 1005);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            (p.flow(), p.seq(), p.intended_ns(), p.sent_ns()),
            (7, 42, 1000, 1005)
        );
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = vec![0u8; 48];
        Packet::emit(&mut buf[..], 1, 2, 3, 4);
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                let r = Packet::new_checked(&b[..]);
                assert!(r.is_err(), "flip at byte {i} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn short_and_foreign_input_never_panics() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&vec![0u8; n][..]),
                Err(Error::Truncated)
            );
        }
        assert_eq!(Packet::new_checked(&[0xffu8; 40][..]), Err(Error::Foreign));
    }
}
