//! Deploy to port answering on a real cluster, in one run: `sealpod deploy`
//! through a provider with `--backend k8s`, against `kubectl apply` of the
//! same objects (made by the same mapping, so the cluster does the same
//! work) — the provider's overhead is admission, the image check, the API
//! calls and libp2p.
//!
//! Needs a cluster: `scripts/k8s-cluster.sh up`, then
//! `SEALPOD_TEST_KUBECONFIG=/run/sealpod-k8s/kubeconfig cargo bench -p sealpod --bench k8s_deploy`
//! (optional: `-- --rounds N`). Rounds alternate the two paths; each pod is
//! deleted, and its namespace gone, before the next round starts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ms, percentile};

const REGISTRY: &str = "127.0.0.1:5064";

fn main() {
    let Some(args) = common::bench_args() else { return };
    let Ok(kubeconfig) = std::env::var("SEALPOD_TEST_KUBECONFIG") else {
        eprintln!("k8s_deploy: skipped (no SEALPOD_TEST_KUBECONFIG; scripts/k8s-cluster.sh up)");
        return;
    };
    let rounds = common::flag(&args, "--rounds", 5usize);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let built = Command::new(common::SEALPOD)
        .args(["image", "from-binary", common::SAMPLE, "--tag", "v1", "--out"])
        .arg(dir.join("images/sample"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let digest = String::from_utf8_lossy(&built.stdout).split_whitespace().last().unwrap().to_owned();
    let provider = common::Provider::start_with(
        dir,
        common::free_port(),
        &[
            "--backend",
            "k8s",
            "--kubeconfig",
            &kubeconfig,
            "--k8s-node-address",
            "127.0.0.1",
            "--k8s-registry-listen",
            REGISTRY,
        ],
    );
    let home = dir.join("bench");
    let manifest = dir.join("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "containers:\n  - name: web\n    image: oci:{}:v1\n    args: [serve, --port, \"8080\", --text, hi]\n    ports: [\"0:8080\"]\n    resources: {{cpu: 100m, memory: 64Mi}}\n",
            dir.join("images/sample").display()
        ),
    )
    .unwrap();

    // One untimed deploy: the nodes pull the image once, for both paths.
    let (_, pod) = sealpod_deploy(&home, &manifest, &provider);
    delete_sealpod(&home, &pod, &kubeconfig);

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (t, pod) = sealpod_deploy(&home, &manifest, &provider);
        eprintln!("round {round}: sealpod deploy to page {:.0} ms", ms(t));
        ours.push(ms(t));
        delete_sealpod(&home, &pod, &kubeconfig);

        let t = kubectl_apply(dir, &kubeconfig, &digest, round);
        eprintln!("round {round}: kubectl apply to page {:.0} ms", ms(t));
        theirs.push(ms(t));
    }
    println!("| path | p50 | min | max |");
    println!("|---|---|---|---|");
    for (name, v) in
        [("sealpod deploy (provider --backend k8s)", &ours), ("kubectl apply of the same objects", &theirs)]
    {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        println!("| {name} | {:.0} ms | {min:.0} ms | {max:.0} ms |", percentile(v.clone(), 50));
    }
    drop(provider);
}

/// Deploys and waits for the page; the time from the command's start.
fn sealpod_deploy(
    home: &std::path::Path,
    manifest: &std::path::Path,
    provider: &common::Provider,
) -> (Duration, String) {
    let t = Instant::now();
    let deployed = common::ok_json(common::sealpod(
        home,
        &["--json", "deploy", manifest.to_str().unwrap(), "--provider", &provider.addr],
    ));
    let addr = common::socket_of(deployed["status"]["addresses"][0]["multiaddr"].as_str().unwrap());
    wait_for_page(&addr);
    (t.elapsed(), deployed["status"]["podId"].as_str().unwrap().to_owned())
}

fn delete_sealpod(home: &std::path::Path, pod: &str, kubeconfig: &str) {
    let out = common::sealpod(home, &["delete", pod]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_gone(kubeconfig, &format!("sealpod-{pod}"));
}

/// The same mapping, applied by kubectl; a fixed NodePort to poll.
fn kubectl_apply(dir: &std::path::Path, kubeconfig: &str, digest: &str, round: usize) -> Duration {
    use sealpod_proto::{Container, Pod, Port, Resources};
    let pod = Pod {
        containers: vec![Container {
            name: "web".into(),
            args: ["serve", "--port", "8080", "--text", "hi"].map(String::from).to_vec(),
            ports: vec![Port { port: 30555, target_port: 8080, ..Default::default() }],
            resources: Some(Resources { cpu_millicores: 100, memory_bytes: 64 << 20, ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let pod_id = format!("pkubectl{round:08}");
    let plan = sealpod_kube::Plan {
        pod_id: &pod_id,
        pod: &pod,
        images: vec![format!("{REGISTRY}/sealpod/images@{digest}")],
        replicas: 1,
        egress: sealpod_kube::Egress::None,
    };
    let options = sealpod_kube::MapOptions { grace_seconds: 10, provider: "kubectl".into(), ..Default::default() };
    let o = sealpod_kube::map(&plan, &options).unwrap();
    let items = vec![
        serde_json::to_value(&o.namespace).unwrap(),
        serde_json::to_value(&o.network_policy).unwrap(),
        serde_json::to_value(o.service.as_ref().unwrap()).unwrap(),
        serde_json::to_value(&o.deployment).unwrap(),
    ];
    let file = dir.join("objects.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new("kubectl").args(["--kubeconfig", kubeconfig, "apply", "-f"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    wait_for_page("127.0.0.1:30555");
    let took = t.elapsed();
    let ns = sealpod_kube::mapping::namespace_of(&pod_id);
    let out = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig, "delete", "namespace", &ns, "--wait=false"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl delete: {}", String::from_utf8_lossy(&out.stderr));
    wait_gone(kubeconfig, &ns);
    took
}

/// Polls with short timeouts: a SYN sent before the pod's network is
/// wired is dropped, not refused, and a blocking connect would wait out the
/// kernel's retransmission (1 s, then 3 s) and measure that instead.
fn wait_for_page(addr: &str) {
    let t = Instant::now();
    while get(addr).map(|p| !p.starts_with("hi")).unwrap_or(true) {
        assert!(t.elapsed() < Duration::from_secs(120), "{addr} never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_gone(kubeconfig: &str, ns: &str) {
    let t = Instant::now();
    loop {
        let out = Command::new("kubectl").args(["--kubeconfig", kubeconfig, "get", "namespace", ns]).output().unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(180), "namespace {ns} never went");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_millis(200);
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}
