//! `client`: command-line front end of the verifying UDP echo client.
//!
//! `client HOST PORT [MESSAGE]` sends probes to an RFC 862 echo server and
//! checks every echo byte for byte; see [`udp_packet_pool::client`] for the
//! design. Usage errors exit 2 (clap), run-time failures (cannot resolve,
//! bind or send) exit 1, and so does any probe that timed out, met no server
//! or came back corrupted. With `--json` the per-probe lines go to stderr and
//! stdout holds only the summary as one JSON object. Ctrl+C or SIGTERM
//! stops the run like `ping`: the summary of the probes done so far is
//! printed and the exit code follows it (0 if at least one probe was done
//! and every one got a correct echo); a second signal exits at once (130).
//!
//! A broken stderr (closed reader, `2>/dev/full`) never panics the client:
//! its messages are written with errors ignored, and with `--json` so are
//! the probe lines, so the summary still reaches stdout. Being interactive,
//! the client writes stderr in line, like `ping`: a reader that stops
//! reading holds it up, and its `log` output (`RUST_LOG`) stays with
//! `env_logger`'s own stderr target, which ignores write errors.
#![deny(unsafe_code)]

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use udp_packet_pool::client::{
    self, ClientConfig, Payload, DEFAULT_MESSAGE, MAX_UDP_PAYLOAD_V4, WRONG_KEY_HINT,
};
use udp_packet_pool::crypto::Psk;

/// Verifying UDP echo client: send probes, time each round trip, check each
/// echo byte for byte.
#[derive(Parser, Debug)]
#[command(name = "client", version)]
struct Cli {
    /// Server host: DNS name, IPv4 literal or IPv6 literal
    host: String,

    /// Server UDP port (1-65535)
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,

    /// Message to send, unchanged, in every probe [default: hello]
    #[arg(conflicts_with = "size")]
    message: Option<String>,

    /// How long to wait for each echo, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Number of probes to send
    #[arg(short, long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,

    /// Time between sends, in milliseconds (used when --count > 1)
    #[arg(short, long, value_name = "MS", default_value_t = 1000)]
    interval: u64,

    /// Send a generated payload of exactly BYTES bytes instead of MESSAGE,
    /// unique per probe (sequence number + alphanumeric pattern) so stale and
    /// duplicate echoes are recognised
    #[arg(short, long, value_name = "BYTES",
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_UDP_PAYLOAD_V4 as u64))]
    size: Option<usize>,

    /// Print the summary as one JSON object on stdout (probe lines go to stderr)
    #[arg(long)]
    json: bool,

    /// echo: plain datagrams, echoed byte for byte (RFC 862). framed: each
    /// probe as a framed echo request (16-byte header with CRC-32C), and
    /// only the matching echo reply counts (`server --protocol framed`)
    #[arg(long, value_enum, default_value_t = ClientProtocol::Echo)]
    protocol: ClientProtocol,

    /// Encrypted echo (`server --psk-file`): seal each probe with
    /// ChaCha20-Poly1305 under this pre-shared key and accept only replies
    /// sealed by the server under it. FILE: 64 hex digits and an optional
    /// newline, mode 600 (head -c32 /dev/urandom | xxd -p -c64 > key; chmod
    /// 600 key). With --protocol echo only
    #[arg(long, value_name = "FILE")]
    psk_file: Option<std::path::PathBuf>,
    /// With --protocol framed: instead of probing, send MSG once as a
    /// broadcast request (type 0x03), which the server relays to its active
    /// clients if this host is inside its --admin networks; exits 0 when
    /// the server acknowledged it, 1 when it refused or did not answer
    #[arg(long, value_name = "MSG", conflicts_with_all = ["message", "size", "json"])]
    broadcast: Option<String>,
    /// With --protocol framed: instead of probing, fetch the server's
    /// counters (framed stats requests, one per fragment, each padded to
    /// 1200 bytes) and print them as JSON on stdout; exit 1 if no complete
    /// answer comes within --timeout per request (each sent at most twice)
    #[arg(long)]
    stats: bool,
}

/// What the client speaks (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientProtocol {
    Echo,
    Framed,
}

/// `eprintln!` without its panic when stderr fails (`2>/dev/full`, a reader
/// gone): a message that cannot be written is lost, the exit code says the rest.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// Probe lines for stderr (`--json`): write errors are ignored, so a broken
/// stderr never ends the run before its summary reaches stdout.
struct Lossy<W>(W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();

    if cli.stats && cli.protocol != ClientProtocol::Framed {
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "--stats asks a framed server for its counters: add --protocol framed",
            )
            .exit();
    }
    let payload = match cli.size {
        Some(n) => Payload::Pattern(n),
        None => Payload::Message(
            cli.message
                .unwrap_or_else(|| DEFAULT_MESSAGE.to_string())
                .into_bytes(),
        ),
    };
    if payload.len() > MAX_UDP_PAYLOAD_V4 {
        Cli::command()
            .error(
                ErrorKind::ValueValidation,
                format!(
                    "MESSAGE is {} bytes; the maximum UDP payload is {MAX_UDP_PAYLOAD_V4} bytes",
                    payload.len()
                ),
            )
            .exit();
    }

    if cli.psk_file.is_some() && cli.protocol != ClientProtocol::Echo {
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                "--psk-file works with --protocol echo only",
            )
            .exit();
    }
    let psk = match cli.psk_file.as_deref().map(Psk::from_file).transpose() {
        Ok(k) => k,
        Err(e) => {
            note!("client: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match client::resolve(&cli.host, cli.port) {
        Ok(addr) => addr,
        Err(e) => {
            note!("client: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(msg) = &cli.broadcast {
        if cli.protocol != ClientProtocol::Framed {
            Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    "--broadcast needs --protocol framed (a broadcast is a framed request)",
                )
                .exit();
        }
        let seq = std::process::id();
        let timeout = Duration::from_millis(cli.timeout);
        return match client::broadcast(target, msg.as_bytes(), seq, timeout) {
            Ok(line) => {
                let _ = writeln!(io::stdout(), "{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                note!("client: {e}");
                ExitCode::from(1)
            }
        };
    }
    if cli.stats {
        return print_stats(target, Duration::from_millis(cli.timeout));
    }
    let config = ClientConfig {
        target,
        payload,
        count: cli.count,
        interval: Duration::from_millis(cli.interval),
        timeout: Duration::from_millis(cli.timeout),
        framed: cli.protocol == ClientProtocol::Framed,
        psk,
    };

    // First Ctrl+C or SIGTERM: stop probing and print the summary so far.
    // Second: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        let registered = flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| flag::register(sig, stop.clone()));
        if let Err(e) = registered {
            note!("client: cannot handle signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    let result = if cli.json {
        client::run_until(&config, &mut Lossy(io::stderr().lock()), &stop)
    } else {
        client::run_until(&config, &mut io::stdout().lock(), &stop)
    };
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            note!("client: {e}");
            return ExitCode::from(1);
        }
    };

    let mut stdout = io::stdout().lock();
    let printed = if cli.json {
        serde_json::to_string(&summary)
            .map_err(io::Error::from)
            .and_then(|json| writeln!(stdout, "{json}"))
    } else {
        write!(stdout, "{summary}")
    };
    if let Err(e) = printed.and_then(|()| stdout.flush()) {
        note!("client: cannot write summary: {e}");
        return ExitCode::from(1);
    }

    if summary.is_success() {
        ExitCode::SUCCESS
    } else {
        if summary.sent == 0 {
            note!("client: interrupted before any probe was done");
        } else {
            note!(
                "client: {} of {} probes failed ({} lost, {} mismatched)",
                summary.failed(),
                summary.sent,
                summary.lost,
                summary.mismatched
            );
            if config.psk.is_some() && summary.received == 0 {
                note!("client: {WRONG_KEY_HINT}");
            }
        }
        ExitCode::from(1)
    }
}

/// `--stats`: fetches the server's stats document and prints it.
fn print_stats(target: std::net::SocketAddr, timeout: Duration) -> ExitCode {
    let doc = match client::stats::fetch(target, timeout) {
        Ok(d) => d,
        Err(e) => {
            note!("client: cannot fetch stats from {target}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = io::stdout().lock();
    match out
        .write_all(&doc)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note!("client: cannot write stats: {e}");
            ExitCode::from(1)
        }
    }
}
