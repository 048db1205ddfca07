//! contrib/k8s: every manifest parses as YAML (yaml-rust2), has the structure
//! Kubernetes needs, and every flag it hands to our binaries (container args,
//! `sh -c` scripts, exec probes) is in that binary's `--help`. No cluster is
//! needed: the manifests are read as files.

mod util;

use std::collections::{BTreeMap, BTreeSet};

use util::help::listed_flags;
use util::k8s::{container_runs, flags, help_of, manifests, of_kind, strings, Doc, IMAGE};

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
    let mut helps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for d in manifests() {
        for c in d.containers() {
            let (at, runs) = container_runs(&d, c);
            for run in runs {
                let help = helps
                    .entry(run.bin.clone())
                    .or_insert_with(|| listed_flags(&help_of(&run.bin)));
                for flag in flags(&run.tokens) {
                    *checked.entry(run.bin.clone()).or_default() += 1;
                    if !help.contains(&flag) {
                        failures.push(format!(
                            "{at}: `{}` has no flag {flag} (not in `{} --help`)",
                            run.bin, run.bin
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each binary is really run somewhere, with flags.
    for bin in ["server", "client", "loadgen", "loadgen merge"] {
        assert!(
            checked.get(bin).copied().unwrap_or(0) > 0,
            "no flag of {bin} checked: {checked:?}"
        );
    }
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
