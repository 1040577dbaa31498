//! One pod, two backends: the same end-to-end test runs against the
//! embedded runtime and against a real Kubernetes cluster (a provider with
//! `--backend k8s`), so the two cannot drift apart.
//!
//! The cluster is the one `scripts/k8s-cluster.sh up` starts (`.ci/run`
//! does); its kubeconfig comes in `SEALPOD_TEST_KUBECONFIG`. Without it the
//! Kubernetes half is skipped, unless `SEALPOD_REQUIRE_K8S=1` makes that a
//! failure (as in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use common::*;

enum Backend {
    Embedded,
    K8s { kubeconfig: String },
}

/// The registry ports the test cluster's nodes pull from (see the script).
static REGISTRY_PORT: AtomicU16 = AtomicU16::new(5055);

impl Backend {
    fn k8s() -> Option<Backend> {
        match std::env::var("SEALPOD_TEST_KUBECONFIG") {
            Ok(k) if !k.is_empty() => Some(Backend::K8s { kubeconfig: k }),
            _ if std::env::var("SEALPOD_REQUIRE_K8S").as_deref() == Ok("1") => {
                panic!("SEALPOD_REQUIRE_K8S=1 but SEALPOD_TEST_KUBECONFIG is unset: run scripts/k8s-cluster.sh up")
            }
            _ => {
                eprintln!("skipped: no cluster (scripts/k8s-cluster.sh up, then SEALPOD_TEST_KUBECONFIG=…/kubeconfig)");
                None
            }
        }
    }

    fn provider_args(&self) -> Vec<String> {
        match self {
            Backend::Embedded => Vec::new(),
            Backend::K8s { kubeconfig } => {
                let port = REGISTRY_PORT.fetch_add(1, Ordering::SeqCst);
                assert!(port < 5065, "the test cluster's nodes pull only from 127.0.0.1:5055-5064");
                [
                    "--backend",
                    "k8s",
                    "--kubeconfig",
                    kubeconfig,
                    "--k8s-node-address",
                    "127.0.0.1",
                    "--k8s-registry-listen",
                    &format!("127.0.0.1:{port}"),
                ]
                .map(str::to_owned)
                .to_vec()
            }
        }
    }

    /// Waits until nothing of the deleted pod is left where it ran.
    fn assert_gone(&self, pod_id: &str, exposed: &str) {
        match self {
            Backend::Embedded => {
                assert!(http_get(exposed).is_err(), "the exposed port still answers after delete");
                let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
                assert!(!mounts.contains(pod_id), "mounts left: {mounts}");
            }
            Backend::K8s { kubeconfig } => {
                let namespace = format!("sealpod-{pod_id}");
                let t = Instant::now();
                loop {
                    let out = Command::new("kubectl")
                        .args(["--kubeconfig", kubeconfig, "get", "namespace", &namespace, "-o", "name"])
                        .output()
                        .expect("kubectl");
                    let err = String::from_utf8_lossy(&out.stderr);
                    if !out.status.success() && err.contains("NotFound") {
                        break;
                    }
                    assert!(t.elapsed() < Duration::from_secs(120), "namespace {namespace} still there: {err}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                eventually("the NodePort closes", || match http_get(exposed) {
                    Ok(page) => Err(format!("still answers: {page}")),
                    Err(_) => Ok(()),
                });
            }
        }
    }
}

fn write_pod(dir: &Path, name: &str, extra: &str) -> PathBuf {
    write_pod_with_port(dir, name, 0, extra)
}

/// The body both backends run: deploy, page, logs, exec, provider killed
/// and restarted, delete.
fn two_container_pod_serves_execs_outlives_its_provider_and_goes_cleanly(backend: Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let args = backend.provider_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let port = free_port();
    let provider = Provider::start_with(dir, port, &args);
    let alice = dir.join("alice");

    let manifest = write_pod(dir, "web", "");
    let deployed =
        ok_json(sealpod(&alice, &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]));
    let pod_id = deployed["status"]["podId"].as_str().unwrap().to_owned();
    assert_eq!(deployed["status"]["phase"], "POD_PHASE_RUNNING", "{deployed}");
    let exposed = socket_of(deployed["status"]["addresses"][0]["multiaddr"].as_str().unwrap());
    assert_eq!(deployed["status"]["addresses"][0]["containerName"], "web");

    // The page comes through the exposed port; the client container reaches
    // the server over the pod's shared localhost.
    let page = eventually("page through the exposed port", || http_get(&exposed));
    assert!(page.starts_with("web says hi"), "{page}");
    eventually("client log", || {
        let out = sealpod(&alice, &["logs", &pod_id, "--container", "client"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("fetched: web says hi").then_some(()).ok_or(text)
    });

    // Exec runs inside the pod and returns the command's exit code.
    exec_reaches_the_pod(&alice, &pod_id, "web says hi");

    // Another identity can neither see nor control the pod.
    let bob = dir.join("bob");
    std::fs::create_dir_all(&bob).unwrap();
    std::fs::copy(alice.join("pods.json"), bob.join("pods.json")).unwrap();
    for args in [vec!["status", pod_id.as_str()], vec!["delete", pod_id.as_str()], vec!["logs", pod_id.as_str()]] {
        let out = sealpod(&bob, &args);
        assert!(!out.status.success(), "bob could {args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another publisher"));
    }

    // The provider dies; the pod keeps serving. On a cluster the provider
    // may even lose its database: the record is on the pod's namespace.
    provider.kill_hard();
    assert!(http_get(&exposed).unwrap().starts_with("web says hi"));
    if matches!(backend, Backend::K8s { .. }) {
        std::fs::remove_file(dir.join("provider/provider.redb")).unwrap();
    }
    let provider = Provider::start_with(dir, port, &args);
    let status = ok_json(sealpod(&alice, &["--json", "status", &pod_id]));
    assert_eq!(status["phase"], "POD_PHASE_RUNNING", "{status}");
    assert_eq!(status["containers"].as_array().unwrap().len(), 2);
    assert_eq!(socket_of(status["addresses"][0]["multiaddr"].as_str().unwrap()), exposed);
    let logs = sealpod(&alice, &["logs", &pod_id, "--container", "web"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("serving on port 8080"));
    let listed = ok_json(sealpod(&alice, &["--json", "pods"]));
    assert_eq!(listed[0]["pod"]["pod_id"], pod_id.as_str());

    let out = sealpod(&alice, &["delete", &pod_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    backend.assert_gone(&pod_id, &exposed);
    assert!(!sealpod(&alice, &["status", &pod_id]).status.success());
    drop(provider);
}

#[test]
fn two_container_pod_on_the_embedded_runtime() {
    if !is_root() {
        eprintln!("skipped: running pods needs root");
        return;
    }
    two_container_pod_serves_execs_outlives_its_provider_and_goes_cleanly(Backend::Embedded);
}

#[test]
fn two_container_pod_on_a_kubernetes_cluster() {
    let Some(backend) = Backend::k8s() else { return };
    two_container_pod_serves_execs_outlives_its_provider_and_goes_cleanly(backend);
}

#[test]
fn a_cluster_provider_refuses_what_the_cluster_cannot_keep_safe() {
    let Some(backend) = Backend::k8s() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    build_sample_image(dir);
    let mut args = backend.provider_args();
    // Secrets go only to an attested provider (here the dev attestor).
    args.extend(["--attestor".to_owned(), "insecure-dev".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let provider = Provider::start_with(dir, free_port(), &args);
    let home = dir.join("carol");

    // A secret volume would be a Kubernetes Secret in etcd: refused unless
    // the operator allows it.
    let key = dir.join("key.txt");
    std::fs::write(&key, "hunter2").unwrap();
    let manifest = write_pod(dir, "secret", &format!("  - name: key\n    secret: {{file: {}}}\n", key.display()));
    let out =
        sealpod(&home, &["deploy", manifest.to_str().unwrap(), "--provider", &provider.addr, "--allow-insecure-dev"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--k8s-allow-secrets"), "{err}");

    // Capacity comes from the nodes: more memory than the node has is refused.
    let manifest = dir.join("huge.yaml");
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    std::fs::write(
        &manifest,
        format!("containers:\n  - name: web\n    image: {image}\n    resources: {{cpu: 100m, memory: 64Ti}}\n"),
    )
    .unwrap();
    let out = sealpod(&home, &["deploy", manifest.to_str().unwrap(), "--provider", &provider.addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not enough capacity in the cluster"), "{err}");
}
