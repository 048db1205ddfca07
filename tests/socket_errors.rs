//! Socket creation failure, provoked for real: with the file-descriptor limit
//! at the number already open, `socket()` fails with EMFILE. This runs alone
//! in its own test binary so no other test competes for descriptors.

use std::io;

use udp_packet_pool::server::{self, ServerConfig};
use udp_packet_pool::socket::{bind_udp, BufferSizes};

/// The lowest free descriptor number: with the limit set to it, no new
/// descriptor can be had.
fn lowest_free_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/dev/null").unwrap();
    f.as_raw_fd() as u64
}

fn set_nofile(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

#[test]
fn socket_creation_failure_names_the_cause_and_the_fix() {
    let (soft, hard) = get_nofile();
    let limit = lowest_free_fd();
    set_nofile(limit, hard).unwrap();
    let direct = bind_udp(
        "127.0.0.1:0".parse().unwrap(),
        false,
        BufferSizes::default(),
    );
    let cfg = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        threads: 2,
        stats_interval: None,
        ..ServerConfig::default()
    };
    let via_server = server::start(&cfg).map(|_| ());
    set_nofile(soft, hard).unwrap();
    for r in [direct.map(|_| ()), via_server] {
        let e = r.expect_err("socket() must fail with no free descriptor");
        let msg = e.to_string();
        assert!(
            msg.contains("cannot create UDP socket for 127.0.0.1:0"),
            "{msg}"
        );
        assert!(msg.contains("ulimit -n"), "{msg}");
    }
}
