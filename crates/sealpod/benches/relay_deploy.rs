//! Deploy through a circuit relay against a direct deploy, in one run, on
//! loopback: a relay (`sealpod relay run`) and a provider listening through
//! it (`--always-relay`); each round deploys the same pod by the provider's
//! direct address and by its `/p2p-circuit` address (the publisher does not
//! listen, so no hole is punched and the relayed path stays relayed), then
//! deletes it. Times are whole `sealpod deploy` commands (process start,
//! connection, request, containers up), median and p90.
//!
//! Needs root (containers): `cargo bench -p sealpod --bench relay_deploy`
//! (optional: `-- --rounds N`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ms, percentile};

fn main() {
    let Some(args) = common::bench_args() else { return };
    if !common::is_root() {
        eprintln!("relay_deploy: skipped (running pods needs root)");
        return;
    }
    let rounds = common::flag(&args, "--rounds", 10usize);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::build_sample_image(dir);
    let relay_ready = dir.join("relay.json");
    let relay_port = common::free_port();
    let mut relay = Command::new(common::SEALPOD)
        .args(["relay", "run", "--listen"])
        .arg(format!("/ip4/127.0.0.1/tcp/{relay_port}"))
        .arg("--key")
        .arg(dir.join("relay.key"))
        .arg("--ready-file")
        .arg(&relay_ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !relay_ready.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "relay did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&relay_ready).unwrap()).unwrap();
    let relay_addr = info["addresses"][0].as_str().unwrap().to_owned();
    let provider = common::Provider::start_with(
        dir,
        common::free_port(),
        &["--relay", &relay_addr, "--always-relay", "--http-listen", "127.0.0.1:0"],
    );
    let provider_id = provider.addr.rsplit("/p2p/").next().unwrap().to_owned();
    let circuit = format!("{relay_addr}/p2p-circuit/p2p/{provider_id}");
    let t = Instant::now();
    while !common::provider_log(dir).contains("relay reservation accepted") {
        assert!(t.elapsed() < Duration::from_secs(30), "no relay reservation: {}", common::provider_log(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = format!("oci:{}:v1", dir.join("images/sample").display());
    let manifest = dir.join("web.yaml");
    std::fs::write(
        &manifest,
        format!("containers:\n  - name: web\n    image: {image}\n    args: [serve, --port, \"8080\"]\n    resources: {{cpu: 100m, memory: 32Mi}}\n"),
    )
    .unwrap();
    let home = dir.join("publisher");
    let deploy = |target: &str| -> (Duration, String) {
        let t = Instant::now();
        let out = Command::new(common::SEALPOD)
            .arg("--home")
            .arg(&home)
            .args(["--json", "--hole-punch-listen", "none", "deploy"])
            .arg(&manifest)
            .args(["--provider", target])
            .output()
            .unwrap();
        let took = t.elapsed();
        let v = common::ok_json(out);
        let pod = v["pod"]["pod_id"].as_str().unwrap().to_owned();
        assert_eq!(v["path"], if target.contains("p2p-circuit") { "relayed" } else { "direct" }, "{v}");
        let del = Command::new(common::SEALPOD).arg("--home").arg(&home).args(["delete", &pod]).output().unwrap();
        assert!(del.status.success(), "{}", String::from_utf8_lossy(&del.stderr));
        (took, pod)
    };
    // One of each to warm caches (image unpacked, relay connection made).
    deploy(&provider.addr);
    deploy(&circuit);
    let (mut direct, mut relayed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        direct.push(ms(deploy(&provider.addr).0));
        relayed.push(ms(deploy(&circuit).0));
    }
    println!("deploy (whole `sealpod deploy` command), {rounds} rounds, loopback:");
    println!(
        "  direct:          p50 {:7.1} ms   p90 {:7.1} ms",
        percentile(direct.clone(), 50),
        percentile(direct, 90)
    );
    println!(
        "  through a relay: p50 {:7.1} ms   p90 {:7.1} ms",
        percentile(relayed.clone(), 50),
        percentile(relayed, 90)
    );
    drop(provider);
    let _ = relay.kill();
    let _ = relay.wait();
}
