//! The configuration matrix: every combination of I/O model, GRO setting,
//! socket mode and thread count the command line asks for, each with its
//! key and the server flags that set it up.

use udp_packet_pool::worker::IoMode;

use crate::cli::{io_modes, io_name, unique, Args, Gro};

/// One configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Server worker threads.
    pub threads: u16,
    /// One SO_REUSEPORT socket per worker (else one shared socket).
    pub reuseport: bool,
    /// The server's I/O model.
    pub io: IoMode,
    /// The server's GRO setting.
    pub gro: Gro,
}

impl Config {
    /// "reuseport" or "shared".
    pub fn mode(&self) -> &'static str {
        if self.reuseport {
            "reuseport"
        } else {
            "shared"
        }
    }

    /// The configuration's key in sweep.json: `2/reuseport/epoll/gro-off`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/gro-{}",
            self.threads,
            self.mode(),
            io_name(self.io),
            self.gro.name()
        )
    }

    /// For progress lines: `threads 2, reuseport sockets, io epoll, GRO off`.
    pub fn describe(&self) -> String {
        format!(
            "threads {}, {} socket{}, io {}, GRO {}",
            self.threads,
            self.mode(),
            if self.reuseport { "s" } else { "" },
            io_name(self.io),
            self.gro.name()
        )
    }

    /// The server's command line for this configuration (ephemeral port
    /// on 127.0.0.1, no statistics lines, JSON report at exit).
    pub fn server_args(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--stats-interval",
            "0",
            "--threads",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(self.threads.to_string());
        if self.reuseport {
            v.push("--reuseport".into());
        }
        v.extend([
            "--io".into(),
            io_name(self.io),
            self.gro.server_flag().into(),
            "--json".into(),
        ]);
        v
    }
}

/// What to sweep, each list in order with each value once.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Thread counts.
    pub threads: Vec<u16>,
    /// Socket modes (true: SO_REUSEPORT).
    pub reuseport: Vec<bool>,
    /// I/O models.
    pub io: Vec<IoMode>,
    /// GRO settings.
    pub gro: Vec<Gro>,
}

impl Matrix {
    /// The matrix the command line asks for.
    pub fn from_args(args: &Args) -> Matrix {
        let reuseport = if args.reuseport {
            vec![true]
        } else if args.shared {
            vec![false]
        } else {
            vec![false, true]
        };
        Matrix {
            threads: unique(args.threads.iter().copied()),
            reuseport,
            io: io_modes(args),
            gro: unique(args.gro.iter().copied()),
        }
    }

    /// Every configuration: I/O model outermost, then GRO, socket mode
    /// and thread count (so one chart line's points run in a row).
    pub fn configs(&self) -> Vec<Config> {
        let mut v = Vec::new();
        for &io in &self.io {
            for &gro in &self.gro {
                for &reuseport in &self.reuseport {
                    for &threads in &self.threads {
                        v.push(Config {
                            threads,
                            reuseport,
                            io,
                            gro,
                        });
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn matrix(extra: &[&str]) -> Matrix {
        let mut v = vec!["sweep"];
        v.extend_from_slice(extra);
        Matrix::from_args(&Args::try_parse_from(v).unwrap())
    }

    #[test]
    fn every_combination_once_in_order() {
        let m = matrix(&[
            "--threads",
            "1,2,1",
            "--io",
            "blocking,epoll",
            "--gro",
            "on,off,on",
        ]);
        assert_eq!(m.threads, vec![1, 2]);
        assert_eq!(m.reuseport, vec![false, true]);
        let c = m.configs();
        assert_eq!(c.len(), 2 * 2 * 2 * 2);
        let keys: Vec<String> = c.iter().map(Config::key).collect();
        assert_eq!(keys[0], "1/shared/blocking/gro-on");
        assert_eq!(keys[1], "2/shared/blocking/gro-on");
        assert_eq!(keys[4], "1/shared/blocking/gro-off");
        assert_eq!(keys[15], "2/reuseport/epoll/gro-off");
        let mut unique_keys = keys.clone();
        unique_keys.sort();
        unique_keys.dedup();
        assert_eq!(unique_keys.len(), keys.len());
    }

    #[test]
    fn socket_mode_flags_pick_one_mode() {
        assert_eq!(matrix(&["--threads", "1", "--reuseport"]).reuseport, [true]);
        assert_eq!(matrix(&["--threads", "1", "--shared"]).reuseport, [false]);
        assert_eq!(matrix(&["--threads", "1", "--io", "all"]).io.len(), 4);
    }

    #[test]
    fn server_args_carry_the_gro_flag() {
        let cfg = Config {
            threads: 2,
            reuseport: true,
            io: IoMode::Uring,
            gro: Gro::Off,
        };
        let a = cfg.server_args().join(" ");
        assert_eq!(
            a,
            "--port 0 --bind 127.0.0.1 --stats-interval 0 --threads 2 --reuseport --io uring --no-gro --json"
        );
        let on = Config {
            gro: Gro::On,
            reuseport: false,
            ..cfg
        };
        assert!(on.server_args().contains(&"--gro".to_string()));
        assert!(!on.server_args().contains(&"--reuseport".to_string()));
        assert_eq!(
            cfg.describe(),
            "threads 2, reuseport sockets, io uring, GRO off"
        );
    }
}
