//! End to end, the way a person would use sealpod: a provider process and
//! publisher processes talking over loopback libp2p, real containers, real
//! ports. Needs root (namespaces, cgroups, mounts); skipped otherwise.

mod common;

use std::net::TcpListener;
use std::path::Path;

use common::*;
use serde_json::Value;

/// What a deleted pod must not leave behind.
fn assert_nothing_left(dir: &Path, pod_id: &str, shim_pid: u64) {
    // Gone, or a zombie waiting for init to reap it (the provider that started
    // it was killed in this test).
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
    assert!(matches!(state, None | Some('Z')), "shim {shim_pid} still running: {stat}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(pod_id), "mounts left: {mounts}");
    for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let cg = controller.path().join("sealpod").join(pod_id);
        assert!(!cg.exists(), "cgroup left: {}", cg.display());
    }
    assert!(!dir.join("provider/pods").join(pod_id).exists(), "pod directory left");
    // No process of the pod (they would run /app/sealpod-sample in the pod's cgroup).
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cg) = std::fs::read_to_string(p.path().join("cgroup")) {
            let zombie = std::fs::read_to_string(p.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
            assert!(zombie || !cg.contains(pod_id), "process {:?} still in the pod's cgroup", p.file_name());
        }
    }
}

#[test]
fn two_container_pod_survives_provider_restart_and_delete_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: running pods needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let port = free_port();
    let provider = Provider::start(dir, port);
    let alice = dir.join("alice");

    // Deploy over /apocryph/provision-pod/0.0.1.
    let manifest = write_pod_with_port(dir, "web", 0, "");
    let deployed =
        ok_json(sealpod(&alice, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();
    assert_eq!(deployed["status"]["phase"], "POD_PHASE_RUNNING", "{deployed}");
    let exposed = socket_of(deployed["status"]["addresses"][0]["multiaddr"].as_str().unwrap());

    // The page comes through the exposed port; the client container reaches
    // the server over the pod's shared localhost.
    let page = eventually("page through the exposed port", || http_get(&exposed));
    assert!(page.starts_with("web says hi"), "{page}");
    let client_log = eventually("client log", || {
        let out = sealpod(&alice, &["logs", &pod_id, "--container", "client"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("fetched: web says hi") {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    assert!(client_log.contains("fetched:"));

    // Another identity cannot see or control the pod, even knowing where it is.
    let bob = dir.join("bob");
    std::fs::create_dir_all(&bob).unwrap();
    std::fs::copy(alice.join("pods.json"), bob.join("pods.json")).unwrap();
    for args in [vec!["status", pod_id.as_str()], vec!["delete", pod_id.as_str()], vec!["logs", pod_id.as_str()]] {
        let out = sealpod(&bob, &args);
        assert!(!out.status.success(), "bob could {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("belongs to another publisher"), "{err}");
    }

    // Kill the provider hard: the pod keeps serving.
    let shim_pid = ok_json(sealpod(&alice, &["--json", "status", &pod_id]));
    assert_eq!(shim_pid["phase"], "POD_PHASE_RUNNING");
    let status_file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("provider/pods").join(&pod_id).join("status.json")).unwrap())
            .unwrap();
    let shim_pid = status_file["shim_pid"].as_u64().unwrap();
    provider.kill_hard();
    assert!(http_get(&exposed).unwrap().starts_with("web says hi"));

    // A restarted provider re-attaches the pod: status, logs and delete work.
    let provider = Provider::start(dir, port);
    let status = ok_json(sealpod(&alice, &["--json", "status", &pod_id]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING", "{status}");
    assert_eq!(status["containers"].as_array().unwrap().len(), 2);
    let logs = sealpod(&alice, &["logs", &pod_id, "--container", "web"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("serving on port 8080"));
    let listed = ok_json(sealpod(&alice, &["--json", "pods"]));
    assert_eq!(listed[0]["pod"]["pod_id"], pod_id.as_str());

    let out = sealpod(&alice, &["delete", &pod_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(dir, &pod_id, shim_pid);
    assert!(http_get(&exposed).is_err(), "the exposed port still answers after delete");
    let out = sealpod(&alice, &["status", &pod_id]);
    assert!(!out.status.success());
    drop(provider);
}

#[test]
fn bad_requests_get_clear_errors_and_the_provider_keeps_serving() {
    let Some((tmp, provider, home)) = fixture("carol") else { return };
    let dir = tmp.path();

    // A missing image.
    let missing = dir.join("missing.yaml");
    std::fs::write(&missing, "containers:\n  - name: a\n    image: oci:/nonexistent/layout:v1\n").unwrap();
    let out = sealpod(&home, &["deploy", missing.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("containers[0].image"), "{err}");

    // An image outside the provider's image roots.
    let outside = dir.join("outside.yaml");
    std::fs::write(&outside, "containers:\n  - name: a\n    image: oci:/etc:v1\n").unwrap();
    let out = sealpod(&home, &["deploy", outside.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("outside the provider's image directories"), "{err}");

    // A host port that is already taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = write_pod_with_port(dir, "busy", taken.local_addr().unwrap().port(), "");
    let out = sealpod(&home, &["deploy", busy.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot expose port"), "{err}");

    // Unknown manifest fields and bad quantities never leave the publisher.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "containers:\n  - name: a\n    image: x\n    resources: {cpu: 12x}\n").unwrap();
    let out = sealpod(&home, &["deploy", bad.to_str().unwrap(), "--provider", &provider.addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.yaml:4") && err.contains("resources.cpu"), "{err}");

    // A pod id nobody has.
    let out = sealpod(&home, &["status", "p0000000000000000"]);
    assert!(!out.status.success());

    // After all that, the provider still deploys a good pod; nothing was left
    // behind by the refused ones.
    // (over QUIC this time)
    let good = write_pod_with_port(dir, "good", 0, "");
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", good.to_str().unwrap(), "--provider", &provider.quic_addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();
    let pods: Vec<_> = std::fs::read_dir(dir.join("provider/pods")).unwrap().flatten().collect();
    assert_eq!(pods.len(), 1, "refused pods left directories behind");
    let out = sealpod(&home, &["delete", &pod_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn cgroup_file(pod_id: &str, container: &str, v1: &str, v2: &str) -> Option<String> {
    let v1_path = format!("/sys/fs/cgroup/memory/sealpod/{pod_id}/{container}/{v1}");
    let v2_path = format!("/sys/fs/cgroup/sealpod/{pod_id}/{container}/{v2}");
    std::fs::read_to_string(v1_path).or_else(|_| std::fs::read_to_string(v2_path)).ok().map(|s| s.trim().to_owned())
}

#[test]
fn failing_container_restarts_and_limits_reach_the_cgroup() {
    let Some((tmp, provider, home)) = fixture("dave") else { return };
    let dir = tmp.path();
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("crashy.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"containers:
  - name: steady
    image: {image}
    args: [serve, --port, "9000"]
    resources: {{cpu: 250m, memory: 48Mi, pids: 64}}
  - name: crashy
    image: {image}
    command: [/app/sealpod-sample, exit, --code, "3"]
restartPolicy: OnFailure
"#
        ),
    )
    .unwrap();
    // No --provider: the provider is found through the DHT, bootstrapping from it.
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--bootstrap", &provider.addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();

    // The crashing container is restarted with back-off and keeps its exit code.
    let status = eventually("restarts", || {
        let s = ok_json(sealpod(&home, &["--json", "status", &pod_id]));
        let crashy = s["containers"].as_array().unwrap().iter().find(|c| c["name"] == "crashy").unwrap().clone();
        if crashy["restarts"].as_u64().unwrap_or(0) >= 2 {
            Ok(crashy)
        } else {
            Err(format!("{s}"))
        }
    });
    assert_eq!(status["exitCode"], 3, "{status}");
    let out = sealpod(&home, &["logs", &pod_id, "--container", "crashy"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.matches("exiting with 3").count() >= 2, "{log}");

    // Requested resources are cgroup limits of the running container.
    let mem = cgroup_file(&pod_id, "steady", "memory.limit_in_bytes", "memory.max").expect("memory cgroup");
    assert_eq!(mem, (48u64 << 20).to_string());
    let cpu = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/sealpod/{pod_id}/steady/cpu.cfs_quota_us"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/sealpod/{pod_id}/steady/cpu.max")))
        .unwrap();
    assert!(cpu.trim().starts_with("25000"), "{cpu}");
    let pids = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/sealpod/{pod_id}/steady/pids.max"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/sealpod/{pod_id}/steady/pids.max")))
        .unwrap();
    assert_eq!(pids.trim(), "64");

    let out = sealpod(&home, &["delete", &pod_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn logs_follow_streams_until_the_container_exits() {
    let Some((tmp, provider, home)) = fixture("erin") else { return };
    let dir = tmp.path();
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("counter.yaml");
    // The fetcher fails five times (nothing listens) and exits.
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: counter\n    image: {image}\n    args: [fetch, --url, \"http://127.0.0.1:1/\", --interval-ms, \"200\", --count, \"5\"]\nrestartPolicy: Never\n"
        ),
    )
    .unwrap();
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();
    // --follow returns by itself once the container has exited and all output was read.
    let out = sealpod(&home, &["logs", &pod_id, "--follow"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(log.matches("fetch failed").count(), 5, "{log}");
    let status = ok_json(sealpod(&home, &["--json", "status", &pod_id]));
    // Its last fetch failed, so it exited 1 and, never restarted, failed the pod.
    assert_eq!(status["phase"], "POD_PHASE_FAILED", "{status}");
    assert_eq!(status["containers"][0]["exitCode"], 1, "{status}");
    let out = sealpod(&home, &["delete", &pod_id]);
    assert!(out.status.success());
}

#[test]
fn exec_runs_in_the_container_and_returns_its_exit_code() {
    let Some((tmp, provider, home)) = fixture("frank") else { return };
    let dir = tmp.path();
    let manifest = write_pod_with_port(dir, "exec", 0, "");
    let deployed =
        ok_json(sealpod(&home, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();

    // The command runs inside the container (its network: the pod's server
    // answers on the pod's localhost) and its exit code comes back.
    let v = exec_reaches_the_pod(&home, &pod_id, "exec says hi");
    assert_eq!(v["exit_code"], 5);

    // A command that does not exist fails without harming the pod.
    let out = sealpod(&home, &["exec", &pod_id, "--", "/no/such/binary"]);
    assert!(!out.status.success());
    let status = ok_json(sealpod(&home, &["--json", "status", &pod_id]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING");

    // Another identity cannot exec.
    let eve = dir.join("eve");
    std::fs::create_dir_all(&eve).unwrap();
    std::fs::copy(home.join("pods.json"), eve.join("pods.json")).unwrap();
    let out = sealpod(&eve, &["exec", &pod_id, "--", "/app/sealpod-sample", "exit", "--code", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another publisher"));

    assert!(sealpod(&home, &["delete", &pod_id]).status.success());
}
