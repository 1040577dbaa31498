//! Two artifact nodes as separate processes: an image pushed to node A with
//! skopeo is pulled from node B's registry by digest, its content coming from
//! A over libp2p, with no registry in between. Needs skopeo.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SAMPLE, SEALPOD};
use serde_json::Value;

struct NodeProcess {
    child: Child,
    ready: Value,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, name: &str, bootstrap: Option<&str>) -> NodeProcess {
    let ready = dir.join(format!("{name}.ready"));
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(SEALPOD);
    cmd.args(["node", "run", "--registry", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--dir"])
        .arg(dir.join(name))
        .arg("--ready-file")
        .arg(&ready);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let t = Instant::now();
    while !ready.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "node {name} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready: Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    NodeProcess { child, ready }
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo").args(args).output().unwrap()
}

#[test]
fn image_pushed_to_one_node_is_pulled_from_another_over_libp2p() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped: needs skopeo");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = Command::new(SEALPOD)
        .args(["image", "from-binary", SAMPLE, "--tag", "v1", "--out"])
        .arg(dir.join("layout"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let a = start_node(dir, "a", None);
    let a_addr = a.ready["addresses"][0].as_str().unwrap().to_owned();
    let b = start_node(dir, "b", Some(&a_addr));
    let reg_a = a.ready["registry"].as_str().unwrap().to_owned();
    let reg_b = b.ready["registry"].as_str().unwrap().to_owned();

    let layout = format!("oci:{}:v1", dir.join("layout").display());
    let push = skopeo(&["copy", "--dest-tls-verify=false", &layout, &format!("docker://{reg_a}/team/sample:v1")]);
    assert!(push.status.success(), "push: {}", String::from_utf8_lossy(&push.stderr));
    let inspect = skopeo(&["inspect", "--tls-verify=false", &format!("docker://{reg_a}/team/sample:v1")]);
    assert!(inspect.status.success());
    let on_a: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let digest = on_a["Digest"].as_str().unwrap().to_owned();

    // B holds nothing: what it serves comes from A through the DHT and the
    // blob protocol, verified by B's store. A's announcements may take a
    // moment to land, so the pull is retried for a while.
    let out_dir = dir.join("pulled");
    let src = format!("docker://{reg_b}/team/sample@{digest}");
    let t = Instant::now();
    loop {
        let pull = skopeo(&["copy", "--src-tls-verify=false", &src, &format!("oci:{}:v1", out_dir.display())]);
        if pull.status.success() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(45),
            "pull from B failed: {}\nB's log: {}",
            String::from_utf8_lossy(&pull.stderr),
            std::fs::read_to_string(dir.join("b.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let on_b: Value = serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &src]).stdout).unwrap();
    assert_eq!(on_b["Digest"], on_a["Digest"]);
    assert_eq!(on_b["Layers"], on_a["Layers"]);
    let log = std::fs::read_to_string(dir.join("b.log")).unwrap_or_default();
    assert!(log.contains("fetched blob from peer"), "{log}");
}
