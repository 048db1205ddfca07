//! What to probe: the [`ClientConfig`] (target, payload, count, interval,
//! timeout) with its validation and UDP payload limits, and [`resolve`] for
//! the host given on the command line.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::payload::Payload;

/// Largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65535 - 8 (UDP header).
pub const MAX_UDP_PAYLOAD_V6: usize = 65_527;
/// Message sent when neither a message nor a size is given.
pub const DEFAULT_MESSAGE: &str = "hello";

/// What to send, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Server address.
    pub target: SocketAddr,
    /// Probe contents.
    pub payload: Payload,
    /// Number of probes (at least 1).
    pub count: u32,
    /// Time from one send to the next (ignored for a single probe).
    pub interval: Duration,
    /// How long to wait for each echo (more than zero).
    pub timeout: Duration,
    /// Send each probe as a framed echo request and expect the framed echo
    /// reply (`--protocol framed`, see `crate::wire::framed`).
    pub framed: bool,
    /// Seal each probe under this key and accept only sealed replies that
    /// open under it (`--psk-file`, see `crate::wire::sealed`).
    pub psk: Option<crate::crypto::Psk>,
}

impl ClientConfig {
    /// One probe of [`DEFAULT_MESSAGE`] to `target`, 1 s timeout and interval.
    pub fn new(target: SocketAddr) -> Self {
        ClientConfig {
            target,
            payload: Payload::Message(DEFAULT_MESSAGE.as_bytes().to_vec()),
            count: 1,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            framed: false,
            psk: None,
        }
    }

    /// Largest payload for the target's address family.
    pub fn max_payload(&self) -> usize {
        match self.target {
            SocketAddr::V4(_) => MAX_UDP_PAYLOAD_V4,
            SocketAddr::V6(_) => MAX_UDP_PAYLOAD_V6,
        }
    }

    /// Check the configuration; errors are [`ErrorKind::InvalidInput`].
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(ErrorKind::InvalidInput, msg));
        if self.count == 0 {
            return invalid("count must be at least 1".to_string());
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be more than zero".to_string());
        }
        if self.target.port() == 0 {
            return invalid(format!("invalid destination {}: port 0", self.target));
        }
        if self.framed && self.psk.is_some() {
            return invalid("--psk-file works with --protocol echo only".to_string());
        }
        let max = if self.framed {
            self.max_payload() - crate::wire::framed::HEADER_LEN
        } else if self.psk.is_some() {
            self.max_payload() - crate::wire::sealed::OVERHEAD
        } else {
            self.max_payload()
        };
        if self.payload.len() > max {
            let what = match self.payload {
                Payload::Pattern(_) => "--size",
                Payload::Message(_) => "message",
            };
            return invalid(format!(
                "{what} of {} bytes exceeds the maximum UDP payload of {max} bytes",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// Resolve `host` (DNS name, IPv4 literal, or IPv6 literal with or without
/// brackets) and `port` to the first address found. The error names the host.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (bare, port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve host '{host}': {e}")))?;
    addrs.next().ok_or_else(|| {
        io::Error::new(
            ErrorKind::NotFound,
            format!("cannot resolve host '{host}': no addresses found"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_configs() {
        let target: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let mut c = ClientConfig::new(target);
        assert!(c.validate().is_ok());
        c.count = 0;
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        c.count = 1;
        c.payload = Payload::Pattern(MAX_UDP_PAYLOAD_V4 + 1);
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("--size"), "{e}");
        assert!(e.to_string().contains("65507"), "{e}");
        c.target = "[::1]:7".parse().unwrap();
        assert!(c.validate().is_ok(), "IPv6 allows larger payloads");
        c.target = "127.0.0.1:0".parse().unwrap();
        c.payload = Payload::Pattern(8);
        assert!(c.validate().is_err());
    }

    #[test]
    fn resolve_literals() {
        assert_eq!(
            resolve("127.0.0.1", 8888).unwrap(),
            "127.0.0.1:8888".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(resolve("::1", 7).unwrap(), "[::1]:7".parse().unwrap());
        assert_eq!(resolve("[::1]", 7).unwrap(), "[::1]:7".parse().unwrap());
    }
}
