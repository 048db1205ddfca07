//! `client --protocol framed --broadcast MESSAGE`: one framed broadcast
//! request (type 0x03) to the server, and its answer: the server relays it
//! to its active clients and acks with the echo reply of the frame when
//! the sender is inside its `--admin` networks, and refuses it with an
//! error reply otherwise.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::wire::framed::{self, Packet, Type};

/// Sends `message` as broadcast number `seq` and waits up to `timeout` for
/// the answer: `Ok` with a line saying it was relayed, `Err` saying why not
/// (refused, no answer, not a framed server).
pub fn broadcast(
    target: SocketAddr,
    message: &[u8],
    seq: u32,
    timeout: Duration,
) -> io::Result<String> {
    if message.len() > usize::from(u16::MAX) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "--broadcast message is {} bytes; a frame carries at most 65535",
                message.len()
            ),
        ));
    }
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(target)?;
    sock.set_read_timeout(Some(timeout))?;
    let request = framed::encode(Type::Broadcast, seq, message);
    sock.send(&request)?;
    let mut buf = vec![0u8; request.len() + 1];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no answer to the broadcast from {target} within {timeout:?}"),
                ))
            }
            Err(e) => return Err(e),
        };
        if let Some(answer) = judge(&buf[..n], seq, message) {
            return answer;
        }
    }
}

/// What an answer says, or `None` for a datagram that is not one (an
/// answer to something else, or another broadcast relayed to us).
fn judge(got: &[u8], seq: u32, message: &[u8]) -> Option<io::Result<String>> {
    let Ok(p) = Packet::new_checked(got) else {
        return Some(Err(io::Error::other(format!(
            "the answer is not a valid frame ({} bytes): is the server running --protocol framed?",
            got.len()
        ))));
    };
    if p.seq() != seq {
        return None;
    }
    match p.frame_type() {
        Some(Type::EchoReply) if p.payload() == message => Some(Ok(format!(
            "broadcast of {} bytes acknowledged (seq {seq}): relayed to the server's active clients",
            message.len()
        ))),
        Some(Type::Error) => {
            let text = String::from_utf8_lossy(p.payload());
            Some(Err(io::Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "broadcast refused (status {}: {}): the server relays broadcasts only from its --admin networks",
                    p.status(),
                    text.trim_end_matches('\0')
                ),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart() {
        let ack = framed::encode(Type::EchoReply, 3, b"hi");
        assert!(judge(&ack, 3, b"hi").unwrap().is_ok());
        assert!(judge(&ack, 4, b"hi").is_none(), "another sequence");
        let relayed = framed::encode(Type::BroadcastMessage, 3, b"hi");
        assert!(judge(&relayed, 3, b"hi").is_none());
        let mut refused = framed::encode(Type::Error, 3, b"no");
        refused[3] = 2;
        Packet::new_unchecked(&mut refused[..]).fill_crc();
        let e = judge(&refused, 3, b"hi").unwrap().unwrap_err();
        assert!(e.to_string().contains("refused (status 2: no)"), "{e}");
        assert!(judge(b"hi", 3, b"hi").unwrap().is_err());
    }
}
