//! Steering `SO_REUSEPORT` sockets by source prefix, with a classic BPF
//! program (`SO_ATTACH_REUSEPORT_CBPF`).
//!
//! Without a program the kernel picks the socket of a group by a hash of
//! the 4-tuple, so one source spreads its ports over every worker. With
//! per-source state (the rate limiter) that would split one source's
//! traffic N ways. The program below reads the IP source address at the
//! network header (`SKF_NET_OFF`), masks it to the rate limiter's prefix
//! (IPv6: at most the first 64 bits), mixes it, and returns `hash % N`:
//! the index of the socket in the group, which is its order of binding.
//! Every datagram of one prefix thus lands on one socket.

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic value).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// Loads relative to the network header (`SKF_NET_OFF`, -0x100000).
const NET: u32 = 0xfff0_0000;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h): class | size
// or operation | source. BPF_LD = 0, BPF_W = 0, BPF_ABS = 0x20, BPF_B = 0x10.
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x10 | 0x20;
const ALU_RSH_K: u16 = 0x04 | 0x70;
const ALU_AND_K: u16 = 0x04 | 0x50;
const ALU_MUL_K: u16 = 0x04 | 0x20;
const ALU_MOD_K: u16 = 0x04 | 0x90;
const ALU_XOR_X: u16 = 0x04 | 0xa0 | 0x08;
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JA: u16 = 0x05;
const MISC_TAX: u16 = 0x07;
const RET_A: u16 = 0x06 | 0x10;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The network mask of a `len`-bit prefix within one 32-bit word that
/// starts at bit `start` of the address.
fn word_mask(len: u8, start: u8) -> u32 {
    let bits = len.saturating_sub(start).min(32);
    u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)
}

/// The program for a group of `n` sockets, IPv4 prefix `v4` bits, IPv6
/// prefix `v6` bits (steered by at most the first 64).
pub fn prefix_program(n: u32, v4: u8, v6: u8) -> Vec<libc::sock_filter> {
    vec![
        op(LD_B_ABS, 0, 0, NET),                // 0: A = first byte of the IP header
        op(ALU_RSH_K, 0, 0, 4),                 // 1: A = IP version
        op(JMP_JEQ_K, 3, 0, 6),                 // 2: IPv6? -> 6
        op(LD_W_ABS, 0, 0, NET + 12),           // 3: A = IPv4 source
        op(ALU_AND_K, 0, 0, word_mask(v4, 0)),  // 4: A &= prefix mask
        op(JMP_JA, 0, 0, 7),                    // 5: -> 13
        op(LD_W_ABS, 0, 0, NET + 12),           // 6: A = IPv6 source bits 32..63
        op(ALU_AND_K, 0, 0, word_mask(v6, 32)), // 7
        op(MISC_TAX, 0, 0, 0),                  // 8: X = A
        op(LD_W_ABS, 0, 0, NET + 8),            // 9: A = IPv6 source bits 0..31
        op(ALU_AND_K, 0, 0, word_mask(v6, 0)),  // 10
        op(ALU_MUL_K, 0, 0, 0x85eb_ca6b),       // 11: mix the first word
        op(ALU_XOR_X, 0, 0, 0),                 // 12: A ^= X
        op(ALU_MUL_K, 0, 0, 0x9e37_79b1),       // 13: hash (Fibonacci)
        op(ALU_RSH_K, 0, 0, 16),                // 14: keep the well-mixed high bits
        op(ALU_MOD_K, 0, 0, n.max(1)),          // 15: A = socket index
        op(RET_A, 0, 0, 0),                     // 16
    ]
}

/// Attaches the prefix-steering program to the reuseport group of `fd`
/// (any socket of the group; all `n` must be bound already).
pub fn steer_by_prefix(fd: RawFd, n: u32, v4: u8, v6: u8) -> io::Result<()> {
    let mut prog = prefix_program(n, v4, v6);
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a live array of `len` filter
    // instructions; the kernel copies it during the call.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        SO_ATTACH_REUSEPORT_CBPF,
        (&fprog as *const libc::sock_fprog).cast(),
        mem::size_of::<libc::sock_fprog>() as libc::socklen_t
    ))
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn masks() {
        assert_eq!(word_mask(24, 0), 0xffff_ff00);
        assert_eq!(word_mask(0, 0), 0);
        assert_eq!(word_mask(56, 0), u32::MAX);
        assert_eq!(word_mask(56, 32), 0xffff_ff00);
        assert_eq!(word_mask(32, 32), 0);
        assert_eq!(word_mask(128, 32), u32::MAX);
    }

    #[test]
    fn one_source_address_lands_on_one_socket_of_four() {
        let mk = |port: u16| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            UdpSocket::from(s)
        };
        let first = mk(0);
        let port = first.local_addr().unwrap().port();
        let socks: Vec<UdpSocket> = std::iter::once(first)
            .chain((1..4).map(|_| mk(port)))
            .collect();
        steer_by_prefix(socks[0].as_raw_fd(), 4, 24, 56).unwrap();
        // 64 source ports from one address: without steering the kernel
        // would spread them over the four sockets.
        let clients: Vec<UdpSocket> = (0..64)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for c in &clients {
            c.send_to(b"x", ("127.0.0.1", port)).unwrap();
        }
        let mut got = [0; 4];
        for (i, s) in socks.iter().enumerate() {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 8];
            while s.recv(&mut buf).is_ok() {
                got[i] += 1;
            }
        }
        assert_eq!(got.iter().sum::<i32>(), 64);
        assert_eq!(got.iter().filter(|&&n| n > 0).count(), 1, "{got:?}");
    }
}
