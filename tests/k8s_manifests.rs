//! contrib/k8s: every manifest parses as YAML (yaml-rust2), has the structure
//! Kubernetes needs, and every flag it hands to our binaries (container args,
//! `sh -c` scripts, exec probes) is in that binary's `--help`. No cluster is
//! needed: the manifests are read as files.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// Flags the manifests use that this tree's binaries do not have yet, each
/// provided by another branch. An entry only excuses its flag while the flag
/// is missing from `--help`: once it arrives the test fails on the stale
/// entry, so the merger deletes it.
const PENDING_FLAGS: &[(&str, &str, &str)] = &[(
    "loadgen",
    "--shard",
    "pending: provided by the shard branch",
)];

/// Our binaries, by the name a manifest calls them (any directory).
const BINS: &[&str] = &["server", "client", "loadgen"];

/// The image built from the Containerfile: ENTRYPOINT /usr/local/bin/server.
const IMAGE: &str = "udp-packet-pool:";

struct Doc {
    file: String,
    yaml: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or("?")
    }
    fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or("?")
    }
    /// `FILE: Kind/name`, for messages.
    fn at(&self) -> String {
        format!("{}: {}/{}", self.file, self.kind(), self.name())
    }
    /// The pod spec of a workload (or of a Pod); None for other kinds.
    fn pod_spec(&self) -> Option<&Yaml> {
        match self.kind() {
            "Pod" => Some(&self.yaml["spec"]),
            "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => {
                Some(&self.yaml["spec"]["template"]["spec"])
            }
            "CronJob" => Some(&self.yaml["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
            _ => None,
        }
    }
    fn containers(&self) -> Vec<&Yaml> {
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

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/k8s")
}

/// Every YAML document of contrib/k8s/*.yaml (sorted by file).
fn manifests() -> Vec<Doc> {
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
fn strings(y: &Yaml, what: &str) -> Vec<String> {
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
struct Invocation {
    bin: String,
    tokens: Vec<String>,
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// The runs of our binaries in one argv: directly, or inside an `sh -c`
/// script (split on whitespace, commands split at `;`, `&&`, `||`, `|`).
fn invocations(argv: &[String]) -> Vec<Invocation> {
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
fn container_runs(doc: &Doc, c: &Yaml) -> (String, Vec<Invocation>) {
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
fn flags(tokens: &[String]) -> Vec<String> {
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

/// `BIN --help` (or `loadgen merge --help`), from the binaries this build made.
fn help_of(bin: &str) -> String {
    let (exe, pre): (&str, &[&str]) = match bin {
        "server" => (util::server_bin(), &[]),
        "client" => (env!("CARGO_BIN_EXE_client"), &[]),
        "loadgen" => (env!("CARGO_BIN_EXE_loadgen"), &[]),
        "loadgen merge" => (env!("CARGO_BIN_EXE_loadgen"), &["merge"]),
        other => panic!("no binary {other}"),
    };
    let out = Command::new(exe).args(pre).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `help` defines `flag`: a line of its option list that starts
/// with it (`--hlog <FILE>`, `-c, --count <N>`, `--json`), not a mention in
/// another option's text, nor a longer flag (`--hlog-interval`).
fn in_help(help: &str, flag: &str) -> bool {
    help.lines().any(|line| {
        let line = line.trim_start();
        let names = line.split("  ").next().unwrap_or("");
        names
            .split([',', ' ', '='])
            .take_while(|w| w.is_empty() || w.starts_with('-'))
            .any(|w| w == flag)
    })
}

#[test]
fn every_document_is_a_kubernetes_object_with_containers_of_our_image() {
    let docs = manifests();
    for d in &docs {
        let at = d.at();
        let api = d.yaml["apiVersion"].as_str();
        let want = match d.kind() {
            "Deployment" | "DaemonSet" | "StatefulSet" => "apps/v1",
            "Job" | "CronJob" => "batch/v1",
            "Service" | "PersistentVolumeClaim" | "Pod" | "ConfigMap" => "v1",
            other => panic!("{at}: unexpected kind {other:?}"),
        };
        assert_eq!(api, Some(want), "{at}: apiVersion");
        assert!(
            d.yaml["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{}: document without metadata.name",
            d.file
        );
        let Some(spec) = d.pod_spec() else { continue };
        let containers = d.containers();
        assert!(!containers.is_empty(), "{at}: no containers");
        for c in containers {
            let name = c["name"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: container without name"));
            let image = c["image"].as_str().unwrap_or("");
            assert!(
                image.starts_with(IMAGE),
                "{at} container {name}: image {image:?}"
            );
            // The team's standard: unprivileged, read-only, no capabilities.
            let sc = &c["securityContext"];
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{at} {name}"
            );
            assert_eq!(
                sc["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{at} {name}"
            );
            let drop = strings(&sc["capabilities"]["drop"], &at);
            assert_eq!(drop, ["ALL"], "{at} container {name}: capabilities.drop");
            assert!(
                c["resources"]["requests"]["memory"].as_str().is_some(),
                "{at} {name}: requests"
            );
            assert!(
                c["resources"]["limits"]["memory"].as_str().is_some(),
                "{at} {name}: limits"
            );
        }
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{at}"
        );
        if d.kind() != "Pod" {
            let labels = &d.yaml["spec"]["template"]["metadata"]["labels"];
            if let Some(sel) = d.yaml["spec"]["selector"]["matchLabels"].as_hash() {
                for (k, v) in sel {
                    assert_eq!(&labels[k.as_str().unwrap()], v, "{at}: selector vs labels");
                }
            }
        }
    }
}

#[test]
fn every_flag_given_to_our_binaries_is_in_their_help() {
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut pending_used = Vec::new();
    for d in manifests() {
        for c in d.containers() {
            let (at, runs) = container_runs(&d, c);
            for run in runs {
                let help = helps
                    .entry(run.bin.clone())
                    .or_insert_with(|| help_of(&run.bin));
                for flag in flags(&run.tokens) {
                    *checked.entry(run.bin.clone()).or_default() += 1;
                    let known = in_help(help, &flag);
                    let pending = PENDING_FLAGS
                        .iter()
                        .find(|(b, f, _)| *b == run.bin && *f == flag);
                    match (known, pending) {
                        (true, None) => {}
                        (true, Some(_)) => failures.push(format!(
                            "{at}: `{} {flag}` is in --help now: delete its PENDING_FLAGS entry",
                            run.bin
                        )),
                        (false, Some((_, _, why))) => pending_used.push(format!("{flag} ({why})")),
                        (false, None) => failures.push(format!(
                            "{at}: `{}` has no flag {flag} (not in `{} --help`)",
                            run.bin, run.bin
                        )),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if !pending_used.is_empty() {
        eprintln!("not checked, {}", pending_used.join(", "));
    }
    // Each binary is really run somewhere, with flags.
    for bin in ["server", "client", "loadgen", "loadgen merge"] {
        assert!(
            checked.get(bin).copied().unwrap_or(0) > 0,
            "no flag of {bin} checked: {checked:?}"
        );
    }
}

/// The documents of one kind.
fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

#[test]
fn services_carry_the_echo_port_over_udp_to_named_container_ports() {
    let docs = manifests();
    let services = of_kind(&docs, "Service");
    let main = services
        .iter()
        .find(|s| s.name() == "udp-echo")
        .expect("Service udp-echo");
    let ports = main.yaml["spec"]["ports"].as_vec().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["port"].as_i64() == Some(8888) && p["protocol"].as_str() == Some("UDP")),
        "{}: no port 8888 with protocol UDP",
        main.at()
    );
    let workloads: Vec<&Doc> = docs.iter().filter(|d| d.pod_spec().is_some()).collect();
    for s in &services {
        let sel = s.yaml["spec"]["selector"].as_hash().expect("selector");
        let backends: Vec<&&Doc> = workloads
            .iter()
            .filter(|w| {
                let labels = &w.yaml["spec"]["template"]["metadata"]["labels"];
                sel.iter().all(|(k, v)| &labels[k.as_str().unwrap()] == v)
            })
            .collect();
        assert!(!backends.is_empty(), "{}: selects no workload", s.at());
        for p in s.yaml["spec"]["ports"].as_vec().unwrap() {
            let target = p["targetPort"].as_str().expect("named targetPort");
            let proto = p["protocol"].as_str().expect("protocol given");
            for w in &backends {
                let found = w.containers().iter().any(|c| {
                    c["ports"].as_vec().into_iter().flatten().any(|cp| {
                        cp["name"].as_str() == Some(target)
                            && cp["protocol"].as_str() == Some(proto)
                    })
                });
                assert!(
                    found,
                    "{}: {} has no {proto} port named {target}",
                    s.at(),
                    w.at()
                );
            }
        }
    }
}

#[test]
fn loadgen_job_is_indexed_and_its_shards_match_completions_and_the_merge() {
    let docs = manifests();
    let jobs = of_kind(&docs, "Job");
    let indexed: Vec<&&Doc> = jobs
        .iter()
        .filter(|j| j.yaml["spec"]["completionMode"].as_str() == Some("Indexed"))
        .collect();
    assert_eq!(indexed.len(), 1, "one Indexed Job (the loadgen shards)");
    let job = indexed[0];
    let at = job.at();
    let n = job.yaml["spec"]["completions"]
        .as_i64()
        .expect("completions");
    assert!(n >= 2, "{at}: completions {n}");
    assert_eq!(
        job.yaml["spec"]["parallelism"].as_i64(),
        Some(n),
        "{at}: parallelism"
    );
    let (cat, runs) = container_runs(job, job.containers()[0]);
    let run = runs
        .iter()
        .find(|r| r.bin == "loadgen")
        .expect("runs loadgen");
    let value = |flag: &str| {
        let i = run.tokens.iter().position(|t| t == flag);
        i.and_then(|i| run.tokens.get(i + 1)).cloned()
    };
    let shard = value("--shard").unwrap_or_else(|| panic!("{cat}: no --shard"));
    assert_eq!(
        shard,
        format!("$(JOB_COMPLETION_INDEX)/{n}"),
        "{cat}: --shard I/N"
    );
    let hlog = value("--hlog").unwrap_or_else(|| panic!("{cat}: no --hlog"));
    assert_eq!(hlog, "/out/shard-$(JOB_COMPLETION_INDEX).hlog", "{cat}");
    assert!(run.tokens.iter().any(|t| t == "--json"), "{cat}: --json");
    let redirect = run.tokens.iter().position(|t| t == ">");
    let out = redirect.and_then(|i| run.tokens.get(i + 1));
    assert_eq!(
        out.map(String::as_str),
        Some("/out/shard-$(JOB_COMPLETION_INDEX).json"),
        "{cat}"
    );
    let target = value("--target").unwrap_or_else(|| panic!("{cat}: no --target"));
    let service = of_kind(&docs, "Service").into_iter().any(|s| {
        let ports = s.yaml["spec"]["ports"].as_vec().unwrap();
        ports.iter().any(|p| {
            target == format!("{}:{}", s.name(), p["port"].as_i64().unwrap())
                && p["protocol"].as_str() == Some("UDP")
        })
    });
    assert!(
        service,
        "{cat}: --target {target} is no UDP Service port here"
    );

    // The shards and the merge share one ReadWriteMany claim.
    let claim_of = |d: &Doc| {
        let vols = d.pod_spec().unwrap()["volumes"]
            .as_vec()
            .expect("volumes")
            .clone();
        vols.iter().find_map(|v| {
            v["persistentVolumeClaim"]["claimName"]
                .as_str()
                .map(str::to_string)
        })
    };
    let claim = claim_of(job).unwrap_or_else(|| panic!("{at}: no PVC volume"));
    let pvc = of_kind(&docs, "PersistentVolumeClaim")
        .into_iter()
        .find(|p| p.name() == claim);
    let pvc = pvc.unwrap_or_else(|| panic!("{at}: PVC {claim} not in contrib/k8s"));
    assert_eq!(
        strings(&pvc.yaml["spec"]["accessModes"], &claim),
        ["ReadWriteMany"]
    );

    let merge = jobs
        .iter()
        .find_map(|j| {
            let c = *j.containers().first()?;
            let (cat, runs) = container_runs(j, c);
            let run = runs.into_iter().find(|r| r.bin == "loadgen merge")?;
            Some((j, cat, run))
        })
        .expect("a Job running loadgen merge");
    let (mjob, mat, mrun) = merge;
    assert_eq!(claim_of(mjob), Some(claim), "{mat}: not the shards' volume");
    for i in 0..n {
        let file = format!("/out/shard-{i}.json");
        assert!(
            mrun.tokens.contains(&file),
            "{mat}: merges no {file} ({n} shards)"
        );
    }
    let extra = format!("/out/shard-{n}.json");
    assert!(
        !mrun.tokens.contains(&extra),
        "{mat}: merges {extra}, only {n} shards"
    );
    assert!(
        mrun.tokens.iter().any(|t| t == "/out/shard-*.hlog"),
        "{mat}: the interval logs"
    );
}
