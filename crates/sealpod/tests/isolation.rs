//! A provider safe from the pods it runs: from inside a pod, with `sealpod
//! exec`, everything an attacker would try fails; on the host the pod's
//! processes run as unprivileged ids no other pod shares; fork, memory and
//! disk bombs stay inside their pod while the provider and a neighbour keep
//! serving. Needs root; skipped otherwise.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn write_single(dir: &Path, name: &str, host_port: u16, args: &str, extra: &str) -> PathBuf {
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let path = dir.join(format!("{name}.yaml"));
    let ports = if host_port == 0 { String::new() } else { format!("\n    ports: [\"{host_port}:8080\"]") };
    std::fs::write(
        &path,
        format!("containers:\n  - name: main\n    image: {image}\n    args: {args}{ports}\n{extra}",),
    )
    .unwrap();
    path
}

fn deploy(home: &Path, manifest: &Path, provider: &Provider) -> String {
    let deployed =
        ok_json(sealpod(home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    deployed["status"]["podId"].as_str().unwrap().to_owned()
}

/// Host pids and their effective uids for every process in the pod's cgroup.
fn pod_process_uids(pod_id: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let in_pod = std::fs::read_to_string(p.path().join("cgroup"))
            .is_ok_and(|cg| cg.contains(&format!("/sealpod/{pod_id}/")));
        if !in_pod {
            continue;
        }
        let status = std::fs::read_to_string(p.path().join("status")).unwrap_or_default();
        if let Some(uid) = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|u| u.parse().ok())
        {
            found.push((pid, uid));
        }
    }
    found
}

fn exec(home: &Path, pod_id: &str, argv: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["exec", pod_id, "--"];
    args.extend_from_slice(argv);
    let out = sealpod(home, &args);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_pod_cannot_escape_and_runs_as_host_ids_of_its_own() {
    let Some((tmp, provider, home)) = fixture("mallory") else { return };
    let dir = tmp.path();
    let (port_a, port_b) = (free_port(), free_port());
    let serve = r#"[serve, --port, "8080", --text, "tenant"]"#;
    let a = deploy(&home, &write_single(dir, "a", port_a, serve, ""), &provider);
    let b = deploy(&home, &write_single(dir, "b", port_b, serve, ""), &provider);
    eventually("pod b answers", || http_get(&format!("127.0.0.1:{port_b}")));

    // From inside pod a: the provider's libp2p port, pod b's forwarded port
    // and pod b's port as the host sees it are all out of reach.
    let provider_port = format!("127.0.0.1:{}", provider.port());
    let b_port = format!("127.0.0.1:{port_b}");
    let provider_pid = provider.child.id().to_string();
    let (code, out) = exec(
        &home,
        &a,
        &[
            "/app/sealpod-sample",
            "probe",
            "--reach",
            &provider_port,
            "--reach",
            &b_port,
            "--outside-pid",
            &provider_pid,
        ],
    );
    let probes: Vec<&str> = out.lines().filter(|l| l.starts_with("probe ")).collect();
    assert!(probes.len() >= 20, "the probe did not run every attempt:\n{out}");
    let allowed: Vec<&&str> = probes.iter().filter(|l| !l.contains(": refused (")).collect();
    assert!(allowed.is_empty(), "attempts that succeeded: {allowed:?}\n{out}");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("seccomp: 2"), "the container runs without a seccomp filter:\n{out}");
    // Root inside the pod, which is what images expect.
    assert!(out.contains("uid: 0"), "{out}");

    // On the host: no process of either pod is root, and the two pods share
    // no id.
    let uids_a: HashSet<u32> = pod_process_uids(&a).into_iter().map(|(_, u)| u).collect();
    let uids_b: HashSet<u32> = pod_process_uids(&b).into_iter().map(|(_, u)| u).collect();
    assert!(!uids_a.is_empty() && !uids_b.is_empty(), "no pod process found on the host");
    assert!(!uids_a.contains(&0) && !uids_b.contains(&0), "a pod process runs as host root: {uids_a:?} {uids_b:?}");
    assert!(uids_a.is_disjoint(&uids_b), "pods share host ids: {uids_a:?} {uids_b:?}");

    // The pod still works as a pod: it writes to its own root and volumes.
    let (code, out) = exec(&home, &a, &["/app/sealpod-sample", "fill", "/probe-file", "--max-bytes", "1048576"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(http_get(&format!("127.0.0.1:{port_a}")).unwrap().contains("tenant"));

    for pod in [&a, &b] {
        assert!(sealpod(&home, &["delete", pod]).status.success());
    }
}

#[test]
fn bombs_stay_inside_their_pod_while_the_provider_and_a_neighbour_serve() {
    let Some((tmp, provider, home)) = fixture("bomber") else { return };
    let dir = tmp.path();
    let neighbour_port = free_port();
    let neighbour = deploy(
        &home,
        &write_single(dir, "neighbour", neighbour_port, r#"[serve, --port, "8080", --text, "still here"]"#, ""),
        &provider,
    );
    let bombs = [
        ("forkbomb", "[forkbomb]", "    resources: {pids: 64, memory: 64Mi}\n".to_owned()),
        ("membomb", "[membomb]", "    resources: {memory: 32Mi}\n".to_owned()),
        (
            "fill",
            "[fill, /scratch/big]",
            "    resources: {ephemeral-storage: 64Mi}\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\nvolumes:\n  - name: scratch\n    emptyDir: {sizeLimit: 32Mi}\n".to_owned(),
        ),
    ];
    let mut bomb_pods = Vec::new();
    for (name, args, extra) in &bombs {
        let manifest = write_single(dir, name, 0, args, &format!("{extra}restartPolicy: Never\n"));
        bomb_pods.push((name, deploy(&home, &manifest, &provider)));
    }
    // While the bombs go off, the provider answers and the neighbour serves.
    for _ in 0..10 {
        let status = ok_json(sealpod(&home, &["--json", "status", &neighbour]));
        assert_eq!(status["phase"], "POD_PHASE_RUNNING", "{status}");
        assert!(http_get(&format!("127.0.0.1:{neighbour_port}")).unwrap().contains("still here"));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Each bomb met its limit.
    let forkbomb = &bomb_pods[0].1;
    let tasks = pod_process_uids(forkbomb).len();
    assert!(tasks <= 64, "the fork bomb runs {tasks} tasks past its limit of 64");
    let membomb = &bomb_pods[1].1;
    eventually("the memory bomb is killed", || {
        let s = ok_json(sealpod(&home, &["--json", "status", membomb]));
        let exit = &s["containers"][0]["exitCode"];
        match exit.as_i64() {
            Some(137) => Ok(()),
            _ => Err(format!("{s}")),
        }
    });
    let fill = &bomb_pods[2].1;
    let logs = eventually("the disk filler hits its limit", || {
        let out = sealpod(&home, &["logs", fill]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("fill stopped") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let written: u64 = logs
        .split("fill stopped after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(written <= 32 << 20, "the filler wrote {written} bytes into a 32 MiB volume");
    assert!(logs.contains("No space left on device") || logs.contains("quota"), "{logs}");

    let status: Value = ok_json(sealpod(&home, &["--json", "status", &neighbour]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING");
    for (_, pod) in &bomb_pods {
        let out = sealpod(&home, &["delete", pod]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(sealpod(&home, &["delete", &neighbour]).status.success());
}

#[test]
fn one_publisher_cannot_take_every_pod_slot_of_a_provider() {
    let Some((tmp, provider, home)) = fixture_with("greedy", &["--max-pods-per-publisher", "1"]) else { return };
    let dir = tmp.path();
    let idle = r#"[serve, --port, "8080", --text, "x"]"#;
    let first = deploy(&home, &write_single(dir, "first", 0, idle, ""), &provider);
    let second = write_single(dir, "second", 0, idle, "");
    let out = sealpod(&home, &["deploy", second.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("at most 1 pods per publisher"), "{err}");
    // Another publisher is still served.
    let other = dir.join("modest");
    let theirs = deploy(&other, &second, &provider);
    for (h, pod) in [(&home, &first), (&other, &theirs)] {
        assert!(sealpod(h, &["delete", pod]).status.success());
    }
}
