//! Reading contrib/k8s: every YAML document of its manifests (yaml-rust2),
//! the containers of each workload, the runs of our binaries in their
//! command, args, `sh -c` scripts and exec probes, and the flags of each run.

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// Our binaries, by the name a manifest calls them (any directory).
pub const BINS: &[&str] = &["server", "client", "loadgen"];

/// The image built from the Containerfile: ENTRYPOINT /usr/local/bin/server.
pub const IMAGE: &str = "udp-packet-pool:";

pub struct Doc {
    pub file: String,
    pub yaml: Yaml,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or("?")
    }
    pub fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or("?")
    }
    /// `FILE: Kind/name`, for messages.
    pub fn at(&self) -> String {
        format!("{}: {}/{}", self.file, self.kind(), self.name())
    }
    /// The pod spec of a workload (or of a Pod); None for other kinds.
    pub fn pod_spec(&self) -> Option<&Yaml> {
        match self.kind() {
            "Pod" => Some(&self.yaml["spec"]),
            "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => {
                Some(&self.yaml["spec"]["template"]["spec"])
            }
            "CronJob" => Some(&self.yaml["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            _ => None,
        }
    }
    pub fn containers(&self) -> Vec<&Yaml> {
        let Some(spec) = self.pod_spec() else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for key in ["initContainers", "containers"] {
            all.extend(spec[key].as_vec().into_iter().flatten());
        }
        all
    }
}

pub fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/k8s")
}

/// Every YAML document of contrib/k8s/*.yaml (sorted by file).
pub fn manifests() -> Vec<Doc> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("contrib/k8s exists")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "contrib/k8s has only {files:?}");
    let mut docs = Vec::new();
    for path in files {
        let file = format!(
            "contrib/k8s/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{file}: not valid YAML: {e}"));
        assert!(!parsed.is_empty(), "{file}: no YAML document");
        for (i, yaml) in parsed.into_iter().enumerate() {
            assert!(
                yaml.as_hash().is_some(),
                "{file}: document {i} is not a mapping"
            );
            docs.push(Doc {
                file: file.clone(),
                yaml,
            });
        }
    }
    docs
}

/// A YAML list of scalars as strings (numbers too: `- "8888"` or `- 8888`).
pub fn strings(y: &Yaml, what: &str) -> Vec<String> {
    match y {
        Yaml::BadValue | Yaml::Null => Vec::new(),
        Yaml::Array(items) => items
            .iter()
            .map(|s| match s {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Real(r) => r.clone(),
                other => panic!("{what}: not a scalar: {other:?}"),
            })
            .collect(),
        other => panic!("{what}: not a list: {other:?}"),
    }
}

/// One run of one of our binaries: `bin` is "server", "client", "loadgen"
/// or "loadgen merge"; `tokens` are the words after it.
#[derive(Debug)]
pub struct Invocation {
    pub bin: String,
    pub tokens: Vec<String>,
}

pub fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// The runs of our binaries in one argv: directly, or inside an `sh -c`
/// script (split on whitespace, commands split at `;`, `&&`, `||`, `|`).
pub fn invocations(argv: &[String]) -> Vec<Invocation> {
    let words: Vec<String> = match argv {
        [sh, c, script, ..] if matches!(basename(sh), "sh" | "bash") && c == "-c" => {
            script.split_whitespace().map(str::to_string).collect()
        }
        _ => argv.to_vec(),
    };
    let mut runs = Vec::new();
    for command in words.split(|w| matches!(w.as_str(), ";" | "&&" | "||" | "|")) {
        let Some(at) = command.iter().position(|w| BINS.contains(&basename(w))) else {
            continue;
        };
        let mut bin = basename(&command[at]).to_string();
        let mut rest = &command[at + 1..];
        if bin == "loadgen" && rest.first().map(String::as_str) == Some("merge") {
            bin = "loadgen merge".into();
            rest = &rest[1..];
        }
        runs.push(Invocation {
            bin,
            tokens: rest.to_vec(),
        });
    }
    runs
}

/// Every run a container makes: its command and args (no command: the
/// image's ENTRYPOINT, `server`) and its exec probes. Keyed by a label for
/// messages (`FILE: Kind/name container C`).
pub fn container_runs(doc: &Doc, c: &Yaml) -> (String, Vec<Invocation>) {
    let name = c["name"].as_str().unwrap_or("?");
    let at = format!("{} container {name}", doc.at());
    let command = strings(&c["command"], &at);
    let args = strings(&c["args"], &at);
    let mut runs = if command.is_empty() {
        let image = c["image"].as_str().unwrap_or("");
        assert!(
            image.starts_with(IMAGE),
            "{at}: no command and image {image:?} is not ours: whose ENTRYPOINT?"
        );
        vec![Invocation {
            bin: "server".into(),
            tokens: args,
        }]
    } else {
        let argv: Vec<String> = command.into_iter().chain(args).collect();
        invocations(&argv)
    };
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let exec = strings(&c[probe]["exec"]["command"], &at);
        runs.extend(invocations(&exec));
    }
    (at, runs)
}

/// The flags among `tokens`: `--name` (value after `=` stripped) and `-x`.
pub fn flags(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .filter_map(|t| {
            if t.starts_with("--") && t.len() > 2 {
                Some(t.split('=').next().unwrap().to_string())
            } else if t.len() == 2 && t.starts_with('-') && t.as_bytes()[1].is_ascii_alphabetic() {
                Some(t.clone())
            } else {
                None
            }
        })
        .collect()
}

/// A run's binary as a command of this build (`loadgen merge`: `loadgen`
/// with `merge` first).
pub fn command_of(bin: &str) -> Command {
    let (exe, pre): (&str, &[&str]) = match bin {
        "server" => (super::server_bin(), &[]),
        "client" => (env!("CARGO_BIN_EXE_client"), &[]),
        "loadgen" => (env!("CARGO_BIN_EXE_loadgen"), &[]),
        "loadgen merge" => (env!("CARGO_BIN_EXE_loadgen"), &["merge"]),
        other => panic!("no binary {other}"),
    };
    let mut cmd = Command::new(exe);
    cmd.args(pre);
    cmd
}

/// `BIN --help` (or `loadgen merge --help`).
pub fn help_of(bin: &str) -> String {
    let out = command_of(bin).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of one kind.
pub fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}
