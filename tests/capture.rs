//! `server --capture`: the pcap file holds exactly the datagrams received
//! (and with `--capture-echoes` the echoes), read back with etherparse and,
//! where installed, with tshark (`REQUIRE_TSHARK=1`, as in CI, makes a
//! missing tshark a failure); a stalled writer drops and counts records;
//! `loadgen --replay` sends a capture's datagrams again.

mod util;

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;
use util::*;

/// A file name in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("capture-{tag}-{}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// (source, destination, payload) of every packet of a RAW pcap.
fn read_back(path: &Path) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    assert_eq!(r.header().datalink, DataLink::RAW);
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let s = SlicedPacket::from_ip(&p.data).unwrap();
        let (src, dst): (IpAddr, IpAddr) = match s.net.unwrap() {
            NetSlice::Ipv4(h) => (
                h.header().source_addr().into(),
                h.header().destination_addr().into(),
            ),
            NetSlice::Ipv6(h) => (
                h.header().source_addr().into(),
                h.header().destination_addr().into(),
            ),
            _ => panic!("not IP"),
        };
        let Some(TransportSlice::Udp(u)) = s.transport else {
            panic!("not UDP")
        };
        out.push((
            SocketAddr::new(src, u.source_port()),
            SocketAddr::new(dst, u.destination_port()),
            u.payload().to_vec(),
        ));
    }
    out
}

fn tshark_available() -> bool {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    prerequisite(ok, "REQUIRE_TSHARK", "tshark (apt-get install tshark)")
}

/// tshark's view: one line per packet, "src srcport dst dstport udp.length
/// payload-hex checksum-status" (status 1: good).
fn tshark_lines(path: &Path) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args([
        "-r",
        path.to_str().unwrap(),
        "-o",
        "udp.check_checksum:TRUE",
        "-T",
        "fields",
    ]);
    for f in [
        "ip.src",
        "ipv6.src",
        "udp.srcport",
        "ip.dst",
        "ipv6.dst",
        "udp.dstport",
        "udp.length",
        "data",
        "udp.checksum.status",
    ] {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn tshark_line(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> String {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{} {} {} {} {} {hex} 1",
        src.ip(),
        src.port(),
        dst.ip(),
        dst.port(),
        payload.len() + 8
    )
}

/// Sends `n` distinct datagrams to a server capturing to `file`, stops it
/// with SIGTERM and checks the file and the report.
fn capture_round_trip(bind: &str, echoes: bool, file: &TempFile) -> Vec<Vec<u8>> {
    let bind = format!("--bind={bind}");
    let mut args = vec!["--port=0", &bind, "--stats-interval=0", "--json"];
    args.extend(["--capture", file.path()]);
    if echoes {
        args.push("--capture-echoes");
    }
    let server = ServerProc::start_exact(&args);
    let addr = server.addr;
    let sock = client_socket(addr);
    let me = sock.local_addr().unwrap();
    let payloads: Vec<Vec<u8>> = (0..5).map(|i| pattern(10 + 37 * i, i as u8)).collect();
    for p in &payloads {
        assert_eq!(&echo(&sock, server.addr, p), p);
    }
    let done = server.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "{}", done.stderr);
    let r = json(&done.stdout);
    assert_reconciled(&r);
    let per = if echoes { 2 } else { 1 };
    assert_eq!(
        r["capture"]["captured"].as_u64(),
        Some(per * payloads.len() as u64),
        "{r}"
    );
    assert_eq!(r["capture"]["capture_dropped"].as_u64(), Some(0));
    let mut want = Vec::new();
    for p in &payloads {
        want.push((me, addr, p.clone()));
        if echoes {
            want.push((addr, me, p.clone()));
        }
    }
    assert_eq!(read_back(&file.0), want);
    if tshark_available() {
        let lines: Vec<String> = want
            .iter()
            .map(|(s, d, p)| tshark_line(*s, *d, p))
            .collect();
        assert_eq!(tshark_lines(&file.0), lines);
    }
    payloads
}

#[test]
fn ipv4_capture_holds_exactly_the_datagrams_received() {
    let f = TempFile::new("v4");
    capture_round_trip("127.0.0.1", false, &f);
}

#[test]
fn ipv6_capture_with_echoes_holds_requests_and_replies() {
    let f = TempFile::new("v6");
    capture_round_trip("::1", true, &f);
}

#[test]
fn each_datagram_of_a_gro_train_is_one_record() {
    // Five datagrams (the last shorter) in one GSO send: the server receives
    // them as one GRO train where the kernel coalesces them, or one by one.
    let f = TempFile::new("gro");
    let server = ServerProc::start(&["--json", "--gro", "--capture", f.path()]);
    let addr = server.addr;
    let sock = client_socket(addr);
    let segments: Vec<Vec<u8>> = (0..5)
        .map(|i| pattern(if i == 4 { 120 } else { 200 }, i))
        .collect();
    udp_packet_pool::io::send_train(&sock, addr, &segments.concat(), 200).unwrap();
    let mut buf = [0u8; 2048];
    for s in &segments {
        let n = sock.recv(&mut buf).expect("echo within 2 s");
        assert_eq!(&buf[..n], &s[..]);
    }
    let done = server.stop_with(libc::SIGTERM);
    let r = json(&done.stdout);
    assert_reconciled(&r);
    let me = sock.local_addr().unwrap();
    let want: Vec<_> = segments.iter().map(|s| (me, addr, s.clone())).collect();
    assert_eq!(read_back(&f.0), want, "{r}");
}

#[test]
fn replaying_a_capture_sends_every_request_and_gets_every_echo() {
    let f = TempFile::new("replay");
    let payloads = capture_round_trip("127.0.0.1", true, &f);
    let n = payloads.len() as u64;
    let server = ServerProc::start(&["--json"]);
    let target = server.addr.to_string();
    for speed in ["max", "1", "4"] {
        let r = loadgen_json(&["--replay", f.path(), "--target", &target, "--speed", speed]);
        assert_eq!(count(&r, "sent"), n, "{r}");
        assert_eq!(count(&r, "matched"), n, "{r}");
        assert_eq!((count(&r, "lost"), count(&r, "unmatched")), (0, 0), "{r}");
        assert_eq!(
            count(&r, "skipped_other_direction"),
            n,
            "the echoes are not replayed: {r}"
        );
        assert_eq!(r["speed"], speed);
    }
    let done = server.stop_with(libc::SIGTERM);
    let (rx, _) = assert_reconciled(&json(&done.stdout));
    assert_eq!(rx, 3 * n);
}

/// A capture with a known pace: `n` datagrams 100 ms apart.
fn paced_capture(file: &TempFile, n: u64) {
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(File::create(&file.0).unwrap(), header).unwrap();
    for i in 0..n {
        let mut pkt = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 7)
            .write(&mut pkt, &pattern(20, i as u8))
            .unwrap();
        let ts = std::time::Duration::from_millis(1_000 + 100 * i);
        w.write_packet(&PcapPacket::new(ts, pkt.len() as u32, &pkt))
            .unwrap();
    }
}

#[test]
fn replay_speed_scales_the_recorded_schedule() {
    let f = TempFile::new("paced");
    paced_capture(&f, 4);
    let server = ServerProc::start(&[]);
    let target = server.addr.to_string();
    for (speed, span) in [("1", 0.3), ("3", 0.1), ("max", 0.0)] {
        let r = loadgen_json(&["--replay", f.path(), "--target", &target, "--speed", speed]);
        assert_eq!((count(&r, "sent"), count(&r, "matched")), (4, 4), "{r}");
        let schedule = r["schedule_s"].as_f64().unwrap();
        assert!((schedule - span).abs() < 1e-6, "--speed {speed}: {r}");
        // Nothing leaves before it is due (a lower bound only).
        assert!(r["duration_s"].as_f64().unwrap() >= schedule, "{r}");
    }
}

#[test]
fn a_stalled_writer_drops_and_counts_records() {
    // The capture file is a FIFO the test stops reading: the writer blocks
    // once the pipe is full, the queue fills, and the rest is dropped.
    let f = TempFile::new("fifo");
    let st = Command::new("mkfifo")
        .arg(f.path())
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let path = f.0.clone();
    // Opening a FIFO's read end waits for the writer: the server's start.
    let reader = std::thread::spawn(move || File::open(path).unwrap());
    let server = ServerProc::start(&["--json", "--capture", f.path(), "--capture-queue", "4"]);
    let mut fifo = reader.join().unwrap();
    let mut header = [0u8; 24];
    fifo.read_exact(&mut header).unwrap();
    let sock = client_socket(server.addr);
    let n = 300;
    for i in 0..n {
        let p = pattern(1000, i as u8);
        assert_eq!(
            echo(&sock, server.addr, &p),
            p,
            "echoes go on while the capture stalls"
        );
    }
    server.signal(libc::SIGTERM);
    // Drain the pipe so the writer can finish and the server exit.
    let mut rest = header.to_vec();
    fifo.read_to_end(&mut rest).unwrap();
    let done = server.wait_exit();
    let r = json(&done.stdout);
    let (rx, _) = assert_reconciled(&r);
    assert_eq!(rx, n);
    let captured = r["capture"]["captured"].as_u64().unwrap();
    let dropped = r["capture"]["capture_dropped"].as_u64().unwrap();
    assert_eq!(captured + dropped, n, "{r}");
    assert!(
        dropped > 0,
        "a 64 KiB pipe cannot hold {n} records of 1 KB: {r}"
    );
    let mut records = 0;
    let mut rd = PcapReader::new(&rest[..]).unwrap();
    while let Some(p) = rd.next_packet() {
        assert_eq!(p.unwrap().data.len(), 20 + 8 + 1000);
        records += 1;
    }
    assert_eq!(records, captured);
}

#[test]
fn an_uncreatable_capture_file_is_named() {
    let out = server_cmd(&["--capture", "/nonexistent-dir/run.pcap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-dir/run.pcap") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn replay_of_a_bad_file_is_a_clear_error() {
    let f = TempFile::new("garbage");
    std::fs::write(&f.0, b"this is not a capture").unwrap();
    let out = loadgen(&["--replay", f.path(), "--target", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(f.path()) && err.contains("not a pcap file"),
        "{err}"
    );
}
